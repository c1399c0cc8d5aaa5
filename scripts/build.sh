#!/usr/bin/env bash
# Installs the dependencies (idempotent) and builds torchlens into ./build.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
if [[ ! -f build/build.ninja ]]; then
  meson setup build
fi
# Two cores and ~1.5 GiB per LibTorch TU: two jobs at most.
ninja -C build -j"${TORCHLENS_JOBS:-2}"
