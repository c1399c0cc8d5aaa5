#!/usr/bin/env bash
# The main job on the built-in demo model: install, build, run `torchlens demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh >&2
exec build/src/cli/torchlens demo "$@"
