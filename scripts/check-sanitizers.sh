#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer, in a
# separate build folder (default build-asan). LibTorch's own reports are
# suppressed only by scripts/sanitizers/*.supp, each entry naming the frame and
# why. Usage: scripts/check-sanitizers.sh [BUILD_DIR=build-asan] [meson test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-asan}
shift || true
supp=$(pwd)/scripts/sanitizers
if [[ ! -f $dir/build.ninja ]]; then
  # -O1 without debug info: what the sanitizers need, at a bearable compile time
  meson setup "$dir" -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=plain -Doptimization=1 -Ddebug=false -Db_ndebug=true -Dbench=false \
    -Ddefault_library=static -Dpython=disabled
fi
ninja -C "$dir" -j"${TORCHLENS_JOBS:-2}"
export ASAN_OPTIONS="detect_leaks=${TORCHLENS_SANITIZER_LEAKS:-1}:detect_odr_violation=0:abort_on_error=0:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:suppressions=$supp/ubsan.supp"
# the install suite builds other projects: its checks are the same as the plain build's
meson test -C "$dir" --no-suite install --num-processes 1 --print-errorlogs "$@"
echo "sanitizers: the test suite passes under ASan + UBSan"
