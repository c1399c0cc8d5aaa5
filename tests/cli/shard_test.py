#!/usr/bin/python3
"""Sharded `torchlens extract`, `merge` and `status`: the real binary.

Usage: shard_test.py TORCHLENS_BINARY WORKDIR
Needs Debian's python3-torch and python3-numpy. The reference is always an
unsharded run of the same command: merged shards must equal it byte for byte.
GNU parallel and Open MPI's mpirun (Debian's parallel, openmpi-bin) are used
as launchers when installed.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

import numpy as np
import torch

BIN = sys.argv[1]
WORK = sys.argv[2]

LAUNCHER_VARS = [
    "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT", "SLURM_PROCID",
    "SLURM_NTASKS", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE",
    "PMIX_RANK",
]


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env.update(extra)
    return env


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1, stride=2)
        self.fc = torch.nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        y = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(y, 1))


class Branchy(torch.nn.Module):
    """Takes a different path depending on the data."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if bool(x.sum() > 0):
            y = torch.relu(y)
        else:
            y = torch.sigmoid(y) * 2
        return y.mean(dim=(2, 3))


def run(*args, env=None, **kw):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=300,
                          env=env if env is not None else clean_env(), **kw)


def path(*p):
    return os.path.join(WORK, *p)


def fresh(name):
    d = path(name)
    shutil.rmtree(d, ignore_errors=True)
    return d


def read_json(p):
    with open(p) as f:
        return json.load(f)


def file_bytes(p):
    with open(p, "rb") as f:
        return f.read()


KEYS = "conv1,conv2,fc"


class ShardTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        shutil.rmtree(WORK, ignore_errors=True)
        os.makedirs(WORK)
        torch.manual_seed(0)
        cls.pt = path("net.pt")
        torch.jit.script(Net().eval()).save(cls.pt)
        cls.x = np.random.default_rng(0).standard_normal((50, 3, 8, 8)).astype(np.float32)
        cls.npy = path("x.npy")
        np.save(cls.npy, cls.x)
        cls.ref = cls.extract_ref(cls.npy, "ref")

    @classmethod
    def extract_ref(cls, inputs, name, *extra):
        out = fresh(name)
        r = run("extract", cls.pt, "--inputs", inputs, "--save", KEYS, "--batch-size", "8",
                "--out", out, "--no-progress", *extra)
        assert r.returncode == 0, r.stderr
        return out

    def args(self, out, *extra, inputs=None):
        return ["extract", self.pt, "--inputs", inputs or self.npy, "--save", KEYS,
                "--batch-size", "8", "--out", out, "--no-progress", *extra]

    def assert_same_as(self, ref, out):
        """out holds exactly the files an unsharded run wrote into ref."""
        index = read_json(os.path.join(ref, "index.json"))
        self.assertEqual(file_bytes(os.path.join(out, "index.json")),
                         file_bytes(os.path.join(ref, "index.json")))
        for layer in index["layers"]:
            a = file_bytes(os.path.join(ref, layer["file"]))
            b = file_bytes(os.path.join(out, layer["file"]))
            self.assertEqual(len(a), len(b), layer["file"])
            self.assertTrue(a == b, layer["file"] + " differs from the unsharded run's")
            self.assertEqual(np.load(os.path.join(out, layer["file"])).shape[0], 50)

    def shards(self, out, n, *extra, inputs=None):
        for k in range(n):
            r = run(*self.args(out, "--shard", f"{k}/{n}", *extra, inputs=inputs))
            self.assertEqual(r.returncode, 0, r.stderr)

    # ---- partition and plan ---------------------------------------------------

    def test_three_shards_merge_to_the_unsharded_files(self):
        out = fresh("three")
        self.shards(out, 3)
        plan = read_json(os.path.join(out, "plan.json"))
        # contiguous, batch-aligned (7 batches of 8 over 3 shards: 2, 2, 3 batches)
        self.assertEqual(plan["shards"], [[0, 16], [16, 32], [32, 50]])
        self.assertEqual(plan["num_stimuli"], 50)
        self.assertEqual(plan["keys"], ["conv1", "conv2", "fc"])
        self.assertEqual(plan["model_sha256"], hashlib.sha256(file_bytes(self.pt)).hexdigest())
        # a killed shard never claims rows: each shard file is a valid .npy of its rows
        a = np.load(os.path.join(out, "shards", "00001-of-00003", "linear_1_6.npy"))
        self.assertEqual(a.shape, (16, 5))
        r = run("merge", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Merged 3 shards (50 stimuli)", r.stdout)
        self.assert_same_as(self.ref, out)
        # idempotent
        r = run("merge", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Nothing to do", r.stdout)
        self.assert_same_as(self.ref, out)
        # resumable per layer: a merge interrupted after some layers finishes the rest
        os.remove(os.path.join(out, "linear_1_6.npy"))
        os.remove(os.path.join(out, "index.json"))
        with open(os.path.join(out, "conv2d_2_3.npy.merging"), "wb") as f:
            f.write(b"torn")
        r = run("merge", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("1 of 3 layer files written this time", r.stdout)
        self.assert_same_as(self.ref, out)
        # --delete-shards: then the shards are gone and merge still says done
        r = run("merge", out, "--delete-shards")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(os.path.join(out, "shards")))
        self.assert_same_as(self.ref, out)

    def test_more_shards_than_batches(self):
        out = fresh("many")
        self.shards(out, 9)  # 7 batches: two shards are empty
        plan = read_json(os.path.join(out, "plan.json"))
        self.assertEqual(sum(1 for b, e in plan["shards"] if b == e), 2)
        r = run("merge", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_same_as(self.ref, out)

    def test_folder_of_stimuli_records_ids(self):
        folder = path("folder")
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        names = [f"img_{i:03d}.npy" for i in range(50)]
        for i, name in enumerate(names):
            np.save(os.path.join(folder, name), self.x[i])
        ref = self.extract_ref(folder, "folder-ref")
        self.assertEqual(read_json(os.path.join(ref, "index.json"))["stimulus_ids"], names)
        out = fresh("folder-sharded")
        self.shards(out, 2, inputs=folder)
        self.assertEqual(read_json(os.path.join(out, "plan.json"))["stimulus_ids"], names)
        self.assertEqual(run("merge", out).returncode, 0)
        self.assert_same_as(ref, out)
        # the same values as the stack
        for f in ("conv2d_1_1.npy", "linear_1_6.npy"):
            self.assertEqual(file_bytes(os.path.join(out, f)), file_bytes(os.path.join(self.ref, f)))

    def test_a_shard_with_other_options_is_refused(self):
        out = fresh("mismatch")
        r = run(*self.args(out, "--shard", "0/2"))
        self.assertEqual(r.returncode, 0, r.stderr)
        cases = [
            (["--shard", "1/3"], "the number of shards (2 in the plan, 3 now)"),
            (["--shard", "1/2", "--seed", "4"], "--seed (0 in the plan, 4 now)"),
        ]
        for extra, want in cases:
            r = run(*self.args(out, *extra))
            self.assertEqual(r.returncode, 2, r.stdout)
            self.assertIn(want, r.stderr)
            self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        r = run("extract", self.pt, "--inputs", self.npy, "--save", "conv1", "--batch-size", "8",
                "--out", out, "--shard", "1/2")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--save (conv1,conv2,fc in the plan, conv1 now)", r.stderr)
        # another model file under the same name: its hash differs
        other = path("other.pt")
        torch.manual_seed(1)
        torch.jit.script(Net().eval()).save(other)
        moved = os.path.join(out, "..", "mismatch-model.pt")
        shutil.copy(self.pt, moved)
        try:
            shutil.copy(other, self.pt)
            r = run(*self.args(out, "--shard", "1/2"))
        finally:
            shutil.copy(moved, self.pt)
        self.assertEqual(r.returncode, 2)
        self.assertIn("the model file's sha256", r.stderr)
        self.assertIn("the file changed", r.stderr)
        # a shard started before needs --resume; a done one has nothing to do
        r = run(*self.args(out, "--shard", "0/2"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Nothing to do", r.stdout)

    def test_float16_flatten_statistics(self):
        extra = ["--dtype", "float16", "--flatten", "--statistics"]
        ref = self.extract_ref(self.npy, "f16-ref", *extra)
        index = read_json(os.path.join(ref, "index.json"))
        self.assertEqual(index["options"], "dtype=float16; flatten; statistics")
        full = read_json(os.path.join(self.ref, "index.json"))
        for layer, plain in zip(index["layers"], full["layers"]):
            a = np.load(os.path.join(ref, layer["file"]))
            b = np.load(os.path.join(self.ref, plain["file"]))
            self.assertEqual(a.dtype, np.float16)
            self.assertEqual(layer["dtype"], "float16")
            self.assertEqual(a.shape, (50, int(np.prod(b.shape[1:]))))
            self.assertEqual(layer["shape"], list(a.shape))
            np.testing.assert_array_equal(a, b.reshape(50, -1).astype(np.float16))
            stem = layer["file"][:-4]
            mean = np.load(os.path.join(ref, stem + ".mean.npy"))
            var = np.load(os.path.join(ref, stem + ".var.npy"))
            self.assertEqual((mean.dtype, mean.shape), (np.float64, a.shape[1:]))
            np.testing.assert_allclose(mean, a.astype(np.float64).mean(0), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(var, a.astype(np.float64).var(0), rtol=1e-12, atol=1e-12)
        out = fresh("f16-sharded")
        self.shards(out, 3, *extra)
        self.assertEqual(run("merge", out).returncode, 0)
        for layer in index["layers"]:
            stem = layer["file"][:-4]
            for name in (layer["file"], stem + ".mean.npy", stem + ".var.npy", "index.json"):
                self.assertTrue(file_bytes(os.path.join(out, name)) ==
                                file_bytes(os.path.join(ref, name)), name)
        # the statistics are part of what merge checks is there
        os.remove(os.path.join(out, index["layers"][0]["file"][:-4] + ".var.npy"))
        r = run("merge", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.exists(os.path.join(out, index["layers"][0]["file"][:-4] +
                                                    ".var.npy")))

    # ---- launchers --------------------------------------------------------------

    def test_shard_from_launcher_variables(self):
        cases = [
            ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "3",
              "SLURM_ARRAY_TASK_COUNT": "4"}, 2, 4,
             "SLURM_ARRAY_TASK_ID=5 - SLURM_ARRAY_TASK_MIN=3 of SLURM_ARRAY_TASK_COUNT=4"),
            ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "3", "PMIX_RANK": "1"}, 1, 3,
             "OMPI_COMM_WORLD_RANK=1 of OMPI_COMM_WORLD_SIZE=3"),
            ({"PMI_RANK": "3", "PMI_SIZE": "4"}, 3, 4, "PMI_RANK=3 of PMI_SIZE=4"),
            ({"PMIX_RANK": "0", "SLURM_NTASKS": "2", "SLURM_PROCID": "0"}, 0, 2,
             "PMIX_RANK=0 of SLURM_NTASKS=2"),
            ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, 1, 2, "SLURM_PROCID=1 of SLURM_NTASKS=2"),
            # an array task inside a job step: the array decides
            ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_MIN": "0",
              "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, 0, 2,
             "SLURM_ARRAY_TASK_ID=0 - SLURM_ARRAY_TASK_MIN=0 of SLURM_ARRAY_TASK_COUNT=2"),
        ]
        for i, (env, k, n, source) in enumerate(cases):
            out = fresh(f"env{i}")
            r = run(*self.args(out), env=clean_env(**env))
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(f"Shard {k}/{n} (from {source})", r.stdout)
            progress = read_json(os.path.join(out, "shards", f"{k:05d}-of-{n:05d}",
                                              "progress.json"))
            self.assertEqual((progress["shard"], progress["num_shards"]), (k, n))
        # --shard wins over the environment
        out = fresh("env-flag")
        r = run(*self.args(out, "--shard", "0/2"), env=clean_env(PMI_RANK="1", PMI_SIZE="2"))
        self.assertIn("Shard 0/2 (from --shard 0/2)", r.stdout)
        # one task: the unsharded layout, and it says so
        out = fresh("env-one")
        r = run(*self.args(out), env=clean_env(SLURM_PROCID="0", SLURM_NTASKS="1"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("One shard (from SLURM_PROCID=0 of SLURM_NTASKS=1)", r.stdout)
        self.assert_same_as(self.ref, out)
        # unusable variables: one line, status 2
        bad = [
            ({"OMPI_COMM_WORLD_RANK": "1"}, "OMPI_COMM_WORLD_RANK is set but OMPI_COMM_WORLD_SIZE"),
            ({"PMI_RANK": "x", "PMI_SIZE": "2"}, "PMI_RANK='x' is not a non-negative integer"),
            ({"PMI_RANK": "2", "PMI_SIZE": "2"}, "shard 2 of 2"),
            ({"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "0",
              "SLURM_ARRAY_TASK_COUNT": "4"}, "use a contiguous array"),
            ({"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT is not"),
        ]
        for env, want in bad:
            r = run(*self.args(fresh("env-bad")), env=clean_env(**env))
            self.assertEqual(r.returncode, 2, (env, r.stdout))
            self.assertIn(want, r.stderr)
            self.assertEqual(r.stderr.count("\n"), 1, r.stderr)
        for text in ("3/3", "1", "a/b", "-1/2", "1/0"):
            r = run(*self.args(fresh("env-bad"), "--shard", text))
            self.assertEqual(r.returncode, 2)
            self.assertIn("bad --shard", r.stderr)

    @unittest.skipUnless(shutil.which("parallel"), "GNU parallel not installed")
    def test_gnu_parallel(self):
        out = fresh("parallel")
        cmd = [shutil.which("parallel"), "--will-cite", "-j2", BIN, *self.args(out, "--quiet"),
               "--shard", "{}/4", ":::", "0", "1", "2", "3"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=clean_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(run("merge", out).returncode, 0)
        self.assert_same_as(self.ref, out)

    @unittest.skipUnless(shutil.which("mpirun"), "mpirun (openmpi-bin) not installed")
    def test_mpirun_as_a_launcher(self):
        out = fresh("mpirun")
        env = clean_env(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                        OMPI_MCA_plm_rsh_agent="", OMPI_MCA_btl="self,vader")
        cmd = [shutil.which("mpirun"), "--oversubscribe", "-np", "4", BIN, *self.args(out)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        if r.returncode != 0 and "orte" in r.stderr.lower() and "Shard" not in r.stdout:
            self.skipTest("mpirun cannot start processes here: " + r.stderr.strip()[-200:])
        self.assertEqual(r.returncode, 0, r.stderr)
        for k in range(4):
            self.assertIn(f"Shard {k}/4 (from OMPI_COMM_WORLD_RANK={k} of OMPI_COMM_WORLD_SIZE=4)",
                          r.stdout)
        self.assertEqual(run("merge", out).returncode, 0)
        self.assert_same_as(self.ref, out)

    # ---- crashes -----------------------------------------------------------------

    def test_kill_resume_merge(self):
        # two shards in background processes; one killed mid-run with SIGKILL
        n = 1200
        big = np.concatenate([self.x] * (n // 50 + 1))[:n]
        big_npy = path("big.npy")
        np.save(big_npy, big)
        ref = fresh("big-ref")
        r = run("extract", self.pt, "--inputs", big_npy, "--save", KEYS, "--batch-size", "2",
                "--out", ref, "--no-progress")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = fresh("big-sharded")

        def args(k):
            return ["extract", self.pt, "--inputs", big_npy, "--save", KEYS, "--batch-size", "2",
                    "--out", out, "--no-progress", "--shard", f"{k}/2"]

        procs = [subprocess.Popen([BIN, *args(k)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=clean_env()) for k in (0, 1)]
        progress_path = os.path.join(out, "shards", "00001-of-00002", "progress.json")
        deadline = time.time() + 120
        done = 0
        while time.time() < deadline and procs[1].poll() is None:
            try:
                done = read_json(progress_path)["rows_done"]
            except (OSError, ValueError, KeyError):
                done = 0
            if done >= 40:
                break
            time.sleep(0.002)
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait()
        self.assertEqual(procs[0].wait(timeout=300), 0)
        committed = read_json(progress_path)["rows_done"]
        if committed >= 600:
            self.skipTest("the shard finished before it could be killed")
        self.assertGreater(committed, 0)
        sdir = os.path.dirname(progress_path)
        ref_index = read_json(os.path.join(ref, "index.json"))
        for layer in ref_index["layers"]:
            # numpy loads the killed shard's file, and it claims only rows on disk:
            # the committed ones, or one more batch whose rows and header were
            # flushed before the progress record
            a = np.load(os.path.join(sdir, layer["file"]))
            self.assertIn(a.shape[0], (committed, committed + 2), layer["file"])
            want = np.load(os.path.join(ref, layer["file"]))[600:600 + a.shape[0]]
            np.testing.assert_array_equal(a, want)
            mm = np.load(os.path.join(sdir, layer["file"]), mmap_mode="r")
            self.assertEqual(mm.shape[0], a.shape[0])
        # status: shard 0 done, shard 1 stopped with its committed rows, resubmit 1
        r = run("status", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("shard 0/2  stimuli 0..599  done  600/600 rows", r.stdout)
        self.assertIn(f"shard 1/2  stimuli 600..1199  stopped  {committed}/600 rows", r.stdout)
        self.assertIn(f"1/2 shards done, {600 + committed}/1200 rows committed; merged: no",
                      r.stdout)
        self.assertIn("resubmit: 1 ", r.stdout)
        # merge refuses, naming the shard
        r = run("merge", out)
        self.assertEqual(r.returncode, 2)
        self.assertIn(f"cannot merge: shard 1 ({committed}/600 rows) of 2 is not done", r.stderr)
        # without --resume the shard is not restarted
        r = run(*args(1))
        self.assertEqual(r.returncode, 2)
        self.assertIn("pass --resume", r.stderr)
        r = run(*args(1), "--resume")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"Extracted {600 - committed} stimuli of shard 1/2", r.stdout)
        r = run("merge", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        index = ref_index
        self.assertEqual(file_bytes(os.path.join(out, "index.json")),
                         file_bytes(os.path.join(ref, "index.json")))
        for layer in index["layers"]:
            self.assertTrue(file_bytes(os.path.join(out, layer["file"])) ==
                            file_bytes(os.path.join(ref, layer["file"])), layer["file"])
        r = run("status", out)
        self.assertIn("2/2 shards done, 1200/1200 rows committed; merged: yes", r.stdout)

    def test_a_running_shard_holds_its_lock(self):
        out = fresh("locked")
        n = 1200
        big_npy = path("big-lock.npy")
        np.save(big_npy, np.concatenate([self.x] * (n // 50)))
        a = ["extract", self.pt, "--inputs", big_npy, "--save", "fc", "--batch-size", "1",
             "--out", out, "--no-progress", "--shard", "0/2"]
        p = subprocess.Popen([BIN, *a], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=clean_env())
        progress = os.path.join(out, "shards", "00000-of-00002", "progress.json")
        deadline = time.time() + 60
        while time.time() < deadline and not os.path.exists(progress):
            time.sleep(0.01)
        # Stopped (not killed) the shard keeps its lock, and it cannot finish while the status
        # and the second shard look at it, however fast the machine is.
        p.send_signal(signal.SIGSTOP)
        try:
            if p.poll() is not None:
                self.skipTest("the shard finished before it could be stopped")
            r = run("status", out)
            second = run(*a, "--resume")
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        self.assertIn("shard 0/2  stimuli 0..599  running", r.stdout)
        self.assertIn("resubmit: 1 ", r.stdout)  # not the running one
        self.assertEqual(second.returncode, 2)
        self.assertIn("shard 0/2 is being written by another process", second.stderr)

    # ---- merge refusals --------------------------------------------------------------

    def test_merge_refuses_a_missing_shard(self):
        out = fresh("missing")
        r = run(*self.args(out, "--shard", "0/3"))
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run("merge", out)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr.strip(),
                         "torchlens: cannot merge: shards 1 (not started), 2 (not started) of 3 "
                         f"are not done; run them (again) with --resume, see `torchlens status {out}`")
        r = run("status", out)
        self.assertIn("resubmit: 1,2 ", r.stdout)
        self.assertIn("shard 2/3  stimuli 32..49  not started  0/18 rows", r.stdout)
        r = run("merge", fresh("nothing"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot merge: no folder", r.stderr)

    def test_merge_refuses_a_shard_of_another_plan(self):
        out = fresh("other-plan")
        self.shards(out, 2)
        other = fresh("other-plan-seed")
        self.shards(other, 2, "--seed", "7")
        shutil.rmtree(os.path.join(out, "shards", "00001-of-00002"))
        shutil.copytree(os.path.join(other, "shards", "00001-of-00002"),
                        os.path.join(out, "shards", "00001-of-00002"))
        r = run("merge", out)
        self.assertEqual(r.returncode, 2)
        self.assertIn("cannot merge: shard 1/2", r.stderr)
        self.assertIn("was extracted under another plan: --seed (0 in the plan, 7 now)", r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1)
        self.assertFalse(os.path.exists(os.path.join(out, "index.json")))

    def test_merge_refuses_shards_that_ran_different_graphs(self):
        pt = path("branchy.pt")
        torch.jit.script(Branchy().eval()).save(pt)
        x = np.abs(np.random.default_rng(1).standard_normal((16, 3, 8, 8))).astype(np.float32)
        x[8:] *= -1  # the second shard takes the other branch
        npy = path("branchy.npy")
        np.save(npy, x)
        out = fresh("branchy")
        for k in (0, 1):
            r = run("extract", pt, "--inputs", npy, "--save", "conv", "--batch-size", "8",
                    "--out", out, "--shard", f"{k}/2")
            self.assertEqual(r.returncode, 0, r.stderr)
        r = run("merge", out)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr.count("\n"), 1)
        self.assertIn("cannot merge: shard 1/2 ran a different graph than shard 0/2: first "
                      "difference at relu_1_", r.stderr)
        self.assertIn("aten::relu [8, 4, 8, 8] in shard 0/2, sigmoid_1_", r.stderr)
        self.assertIn("aten::sigmoid [8, 4, 8, 8] in shard 1/2", r.stderr)

    def test_unsharded_folder_is_not_a_shard_target(self):
        r = run(*self.args(self.ref, "--shard", "0/2"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("holds an unsharded run", r.stderr)
        r = run("merge", self.ref)
        self.assertEqual(r.returncode, 0)
        self.assertIn("Nothing to do", r.stdout)
        r = run("status", self.ref)
        self.assertIn("1/1 shards done, 50/50 rows committed; merged: yes", r.stdout)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]], verbosity=2)
