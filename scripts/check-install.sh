#!/usr/bin/env bash
# Installs a built torchlens into a temporary prefix and builds three consumers
# against it, as labs use it: Meson with dependency('torchlens') (pkg-config),
# Meson with torchlens as a subproject, CMake with find_package(torchlens). Each
# logs a small model and checks a value (tests/install/consumer.cpp). Also checks
# that the installed headers are exactly the public ones.
#
# Usage: scripts/check-install.sh [BUILD_DIR=build] [WORK_DIR=BUILD_DIR/install-check]
# (run by `meson test` as the `install` suite; needs cmake, from install-deps.sh).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
work=${2:-$build/install-check}
rm -rf "$work"
mkdir -p "$work"
jobs=${TORCHLENS_JOBS:-2}

quiet() { # runs a command, printing its output only when it fails
  local log="$work/last.log"
  "$@" >"$log" 2>&1 || { cat "$log"; return 1; }
}


echo "== meson install into $work/root"
quiet meson install -C "$build" --destdir "$work/root" --no-rebuild
prefix=$(meson introspect "$build" --buildoptions |
  python3 -c "import json,sys; print(next(o['value'] for o in json.load(sys.stdin) if o['name']=='prefix'))")
libdir=$(meson introspect "$build" --buildoptions |
  python3 -c "import json,sys; print(next(o['value'] for o in json.load(sys.stdin) if o['name']=='libdir'))")
root="$work/root$prefix"

echo "== installed headers: every public header, no private one"
(cd "$src/include" && find torchlens -name '*.hpp' | sort) > "$work/public.txt"
(cd "$src/passes" && find torchlens -name '*.hpp' | sort) >> "$work/public.txt"
sort -o "$work/public.txt" "$work/public.txt"
(cd "$root/include" && find torchlens -name '*.hpp' | sort) > "$work/installed.txt"
diff "$work/public.txt" "$work/installed.txt"
test -f "$root/$libdir/libtorchlens.a" && test -f "$root/$libdir/libtorchlens.so"
test -x "$root/bin/torchlens"
if grep -rn '#include "' "$root/include/torchlens"; then
  echo "an installed header includes a private header"; exit 1
fi

core=$(find "$root" -path '*/torchlens_cpp/_core*.so' | head -n 1)
if [[ -n $core ]]; then
  site=$(dirname "$(dirname "$core")")
  echo "== Python: torchlens_cpp installed in ${site#"$work/root"}, imported from there"
  test -f "$site/torchlens_cpp/__init__.py"
  # the same folder without the staging root must be on the Python's own path
  /usr/bin/python3 -c "import sys; assert sys.argv[1] in sys.path, sys.argv[1]" "${site#"$work/root"}"
  PYTHONPATH=$site /usr/bin/python3 -c "
import torch, torchlens_cpp as tl
assert tl.__file__.startswith('$site'), tl.__file__
log = tl.log_forward_pass(torch.nn.Linear(3, 2), torch.ones(1, 3))
assert log['linear_1_1'].tensor_shape == (1, 2)
print('python consumer OK:', len(log), 'layers')"
fi

pc="$root/$libdir/pkgconfig"
echo "== pkg-config: $(PKG_CONFIG_PATH=$pc pkg-config --modversion torchlens)"
PKG_CONFIG_PATH=$pc pkg-config --cflags --libs torchlens

run_consumer() { # NAME BINARY
  local out
  out=$("$2")
  echo "$1: $out"
  [[ $out == "consumer OK"* ]]
}

echo "== Meson consumer, dependency('torchlens') via pkg-config"
mkdir -p "$work/meson-src"
cp "$src/tests/install/meson/meson.build" "$src/tests/install/consumer.cpp" "$work/meson-src/"
PKG_CONFIG_PATH=$pc quiet meson setup "$work/meson-build" "$work/meson-src"
quiet ninja -C "$work/meson-build" -j"$jobs"
LD_LIBRARY_PATH="$root/$libdir" run_consumer meson "$work/meson-build/consumer"

echo "== CMake consumer, find_package(torchlens)"
mkdir -p "$work/cmake-src"
cp "$src/tests/install/cmake/CMakeLists.txt" "$src/tests/install/consumer.cpp" "$work/cmake-src/"
quiet cmake -S "$work/cmake-src" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$root" \
  -DCMAKE_BUILD_TYPE=Release
quiet cmake --build "$work/cmake-build" -j"$jobs"
LD_LIBRARY_PATH="$root/$libdir" run_consumer cmake "$work/cmake-build/consumer"

echo "== Meson consumer, torchlens as a subproject"
mkdir -p "$work/sub-src/subprojects"
cp "$src/tests/install/subproject/meson.build" "$src/tests/install/consumer.cpp" "$work/sub-src/"
ln -s "$src" "$work/sub-src/subprojects/torchlens"
quiet meson setup "$work/sub-build" "$work/sub-src"
quiet ninja -C "$work/sub-build" -j"$jobs" consumer
run_consumer subproject "$work/sub-build/consumer"
echo "install check: all three consumers OK"
