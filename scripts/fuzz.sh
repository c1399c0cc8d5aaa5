#!/usr/bin/env bash
# Runs the .npy fuzz target under libFuzzer (clang, ASan + UBSan) for a while.
# Inputs that found new coverage go to a scratch corpus; a crash leaves its
# input in the current folder (crash-*): fix it, then copy the input into
# tests/fuzz/corpus/npy/ so the test suite replays it from then on.
# Usage: scripts/fuzz.sh [SECONDS=60] [extra libFuzzer flags...]
# Needs clang with libFuzzer (apt install clang-14); CI does not run it: CI
# replays the corpus through tests/fuzz/driver.cpp instead.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
out=${TORCHLENS_FUZZ_DIR:-build-fuzz}
mkdir -p "$out/corpus"
cxx=$(command -v clang++-14 || command -v clang++ || true)
[[ -n $cxx ]] || { echo "fuzz.sh: clang++ not found (apt install clang)" >&2; exit 1; }
# LibTorch is only linked: its code is not instrumented, ours is.
"$cxx" -std=c++20 -O1 -g -DNDEBUG -D_GLIBCXX_USE_CXX11_ABI=1 \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Iinclude -isystem /usr/include/torch/csrc/api/include \
  tests/fuzz/fuzz_npy.cpp src/io/npy.cpp \
  -ltorch -ltorch_cpu -lc10 -o "$out/fuzz_npy"
cp -n tests/fuzz/corpus/npy/* "$out/corpus/" 2>/dev/null || true
"$out/fuzz_npy" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 "$@" \
  "$out/corpus"
