#!/usr/bin/env bash
# Installs every Debian package torchlens needs to build, test and benchmark.
# Idempotent: packages already present are left alone; safe to run repeatedly.
set -euo pipefail

packages=(
  g++ pkg-config meson ninja-build cmake
  libtorch-dev
  libboost-graph-dev
  librange-v3-dev
  doctest-dev
  libgraphviz-dev graphviz
  libjpeg62-turbo-dev libpng-dev
  python3 python3-torch python3-torchvision python3-numpy
  # launchers the sharded-extract tests run torchlens under (tests/cli/shard_test.py)
  parallel openmpi-bin
  pybind11-dev python3-pybind11   # the Python extension (python/, docs/python.md)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
