#!/usr/bin/env bash
# A real single-node Slurm on localhost (Debian's slurmctld + slurmd + munge)
# runs a sharded `torchlens extract` as `sbatch --array=0-3 --wait`, then
# `torchlens merge`; the merged files must equal an unsharded run byte for byte.
# Not part of `meson test` (it installs and starts system daemons, as root);
# run it by hand or from CI when the time budget allows:
#
#   scripts/check-slurm.sh [BUILD_DIR]     # default: build
#
# It stops the daemons it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
BIN=$(realpath "$BUILD/src/cli/torchlens")
[[ -x $BIN ]] || { echo "check-slurm: build torchlens first ($BIN)"; exit 2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends slurmd slurmctld slurm-client munge
fi

WORK=$(mktemp -d /tmp/torchlens-slurm.XXXXXX)
chmod 755 "$WORK"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# munge: a key, then the daemon (foreground, as root, in the background here)
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
[[ -s /etc/munge/munge.key ]] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
munged --foreground --force &
pids+=($!)
sleep 1

# slurm.conf: one node, this host, as many CPUs as it has
host=$(hostname -s)
cpus=$(nproc)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=torchlens-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
EOF
slurmctld -D &
pids+=($!)
sleep 2
slurmd -D &
pids+=($!)
for _ in $(seq 60); do
  sinfo -h -o %T 2>/dev/null | grep -Eq 'idle|mix|alloc' && break
  sleep 1
done
sinfo

# the model and stimuli, from Debian's python3-torch (TorchScript needs a source file)
cat > "$WORK/make.py" <<'PY'
import sys, numpy as np, torch
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 5)
    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.fc(y.mean(dim=(2, 3)))
torch.manual_seed(0)
torch.jit.script(Net().eval()).save(sys.argv[1] + "/net.pt")
np.save(sys.argv[1] + "/x.npy", np.random.default_rng(0).standard_normal((100, 3, 16, 16)).astype(np.float32))
PY
/usr/bin/python3 "$WORK/make.py" "$WORK"

ARGS=("$WORK/net.pt" --inputs "$WORK/x.npy" --save conv,fc --batch-size 8)
"$BIN" extract "${ARGS[@]}" --out "$WORK/ref" --quiet
cat > "$WORK/job.sh" <<EOF
#!/bin/bash
#SBATCH --array=0-3
#SBATCH --output=$WORK/task-%a.out
"$BIN" extract ${ARGS[*]} --out $WORK/sharded --resume
EOF
sbatch --wait "$WORK/job.sh"
cat "$WORK"/task-*.out
grep -q "from SLURM_ARRAY_TASK_ID=" "$WORK/task-0.out"
"$BIN" status "$WORK/sharded"
"$BIN" merge "$WORK/sharded"
for f in "$WORK"/ref/*; do
  cmp "$f" "$WORK/sharded/$(basename "$f")"
done
echo "check-slurm: sbatch --array=0-3 then merge equals the unsharded run ($WORK)"
