#!/usr/bin/env bash
# Every public header compiles on its own (a TU that includes only it), with
# only the public include directories (include/, passes/) and LibTorch's, and
# none includes a private header (src/). Warnings as in the build.
#
# Usage: scripts/check-headers.sh [BUILD_DIR=build]   (run by `meson test`)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
jobs=${TORCHLENS_JOBS:-2}

if grep -rn '#include "' "$src/include" "$src/passes"; then
  echo "a public header includes a private header"
  exit 1
fi
# LibTorch's include flags as the build uses them (from the uninstalled .pc file)
torch_flags=()
read -ra cflags <<< "$(PKG_CONFIG_PATH=$build/meson-uninstalled pkg-config --cflags torchlens-uninstalled)"
for ((i = 0; i < ${#cflags[@]}; ++i)); do
  case "${cflags[i]}" in
    -isystem) torch_flags+=(-isystem "${cflags[i + 1]}"); ((++i)) ;;
    -D*) torch_flags+=("${cflags[i]}") ;;
  esac
done
export CHECK_FLAGS="-std=c++20 -fsyntax-only -DNDEBUG -Wall -Wextra -Wpedantic -Werror \
  -I$src/include -I$src/passes $(PKG_CONFIG_PATH=$build/meson-uninstalled pkg-config --cflags-only-I libgvc 2>/dev/null || true) ${torch_flags[*]}"
check() { # HEADER
  printf '#include <%s>\n#include <%s>\n' "$1" "$1" | c++ $CHECK_FLAGS -x c++ - \
    || { echo "FAILED: $1"; return 1; }
}
export -f check
headers=$( (cd "$src/include" && find torchlens -name '*.hpp'; cd "$src/passes" && find torchlens -name '*.hpp') | sort)
count=$(wc -l <<< "$headers")
xargs -P "$jobs" -I{} bash -c 'check {}' <<< "$headers"
echo "headers: all $count compile on their own (and twice: include guards)"
