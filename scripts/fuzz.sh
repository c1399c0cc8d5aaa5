#!/usr/bin/env bash
# Runs one fuzz target (npy, model or index; tests/fuzz/fuzz_<target>.cpp) under
# libFuzzer with ASan + UBSan for a while, starting from tests/fuzz/corpus/<target>.
# The target and the sources it tests are compiled with clang and instrumented;
# the rest of torchlens comes from the Meson build (build/, built first if
# missing) and LibTorch is only linked. New coverage goes to a scratch corpus
# (build-fuzz/<target>); a crash leaves crash-* in the current folder: fix it,
# then copy the input into tests/fuzz/corpus/<target>/ so that the test suite
# replays it from then on (tests/fuzz/README.md).
# Usage: scripts/fuzz.sh TARGET [SECONDS=60] [extra libFuzzer flags...]
# Needs clang with libFuzzer (apt install clang-14); CI does not run it: the
# test suite replays the corpora through tests/fuzz/driver.cpp instead.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh npy|model|index [SECONDS] [libFuzzer flags]}
seconds=${2:-60}
shift $(($# < 2 ? $# : 2))
# clang 14 cannot compile LibTorch 1.13's headers as C++20, so the targets that
# only touch LibTorch are built as C++17; index.cpp needs torchlens' C++20 headers
case $target in
  npy) sources="src/io/npy.cpp" std=c++17 ;;
  model) sources="src/io/model_file.cpp src/io/pickle_scan.cpp" std=c++17 ;;
  index) sources="src/extract/index.cpp" std=c++20 ;;
  *) echo "fuzz.sh: unknown target '$target' (npy, model, index)" >&2; exit 2 ;;
esac
cxx=$(command -v clang++-14 || command -v clang++ || true)
[[ -n $cxx ]] || { echo "fuzz.sh: clang++ not found (apt install clang-14)" >&2; exit 1; }
[[ -f build/build.ninja ]] || meson setup build
ninja -C build src/libtorchlens.a >/dev/null
out=${TORCHLENS_FUZZ_DIR:-build-fuzz}/$target
mkdir -p "$out/corpus"
# shellcheck disable=SC2086
"$cxx" -std="${TORCHLENS_FUZZ_STD:-$std}" -O1 -g -DNDEBUG -D_GLIBCXX_USE_CXX11_ABI=1 \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Iinclude -isystem /usr/include/torch/csrc/api/include \
  "tests/fuzz/fuzz_$target.cpp" $sources build/src/libtorchlens.a \
  -ltorch -ltorch_cpu -lc10 -lpthread -o "$out/fuzz_$target"
cp -n "tests/fuzz/corpus/$target"/* "$out/corpus/" 2>/dev/null || true
# LibTorch keeps caches (compiled TorchScript, interned strings) that LeakSanitizer
# would report after every input; leaks are what scripts/check-sanitizers.sh checks.
ASAN_OPTIONS="detect_leaks=0:${ASAN_OPTIONS:-}" \
  "$out/fuzz_$target" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096 \
  -print_final_stats=1 "$@" "$out/corpus"
