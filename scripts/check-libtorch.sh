#!/usr/bin/env bash
# Builds torchlens against another LibTorch and runs the test suite on it:
#
#   scripts/check-libtorch.sh LIBTORCH [BUILD_DIR] [meson test arguments...]
#
# LIBTORCH is a LibTorch distribution's root (include/, lib/), or `python` for
# the LibTorch inside the torch that python3 imports (a torch 2.x wheel carries
# one; that python3 then also exports the test models). Where that LibTorch has
# CUDA and sees a device, tests/capture/device_test.cpp runs its cases on the
# GPU as well. Boost (Graph, Hana), range-v3, doctest, libjpeg and libpng must
# be where the compiler and pkg-config look: on a machine without Debian's
# packages, `source KIT/env.sh` after scripts/make-deps-kit.sh made KIT here.
# BUILD_DIR defaults to build-libtorch.
set -euo pipefail
cd "$(dirname "$0")/.."
if (($# < 1)); then
  echo "usage: scripts/check-libtorch.sh LIBTORCH [BUILD_DIR] [meson test arguments...]" >&2
  exit 2
fi
libtorch=$1
shift
build=build-libtorch
if (($# > 0)) && [[ $1 != -* ]]; then
  build=$1
  shift
fi
python=python3
if [[ $libtorch == python ]]; then
  python=$(command -v python3)
  libtorch=$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
fi
[[ -f $libtorch/include/torch/script.h ]] || {
  echo "check-libtorch: $libtorch holds no LibTorch (include/torch/script.h)" >&2
  exit 2
}
echo "check-libtorch: LibTorch at $libtorch"
if [[ ! -f $build/build.ninja ]]; then
  meson setup "$build" -Dlibtorch="$libtorch" -Dpython_exe="$(command -v "$python")" \
    -Dgraphviz=auto -Dbench=false
fi
ninja -C "$build" -j"${TORCHLENS_JOBS:-$(nproc)}"
meson test -C "$build" --print-errorlogs --no-suite install "$@"
