#!/usr/bin/env bash
# Copies what torchlens needs besides LibTorch and a compiler, from this Debian
# machine, into one folder that can travel to a machine without Debian's
# packages (a GPU machine with a torch wheel, for scripts/check-libtorch.sh):
# the Boost headers the tree includes (what g++ -M lists for every
# `#include <boost/...>` here, and boost/config), range-v3 with meta, concepts
# and std, doctest, and libjpeg/libpng (headers, libraries, .pc files) with
# pkgconf. Then, there: `source KIT/env.sh; scripts/check-libtorch.sh python`.
#
#   scripts/make-deps-kit.sh [KIT=.devkit]      (add KIT to .git/info/exclude)
set -euo pipefail
cd "$(dirname "$0")/.."
kit=$(realpath -m "${1:-.devkit}")
mkdir -p "$kit/include/libpng16" "$kit/lib/pkgconfig" "$kit/bin"
all=$(mktemp --suffix=.cpp)
trap 'rm -f "$all"' EXIT
grep -rhoE "#include <boost/[^>]+>" include passes src tests bench python | sort -u > "$all"
{ g++ -std=c++20 -DNDEBUG -M "$all" | tr ' \\' '\n\n' | grep '^/usr/include/boost/'
  find /usr/include/boost/config -type f; } | sort -u | while read -r f; do
  mkdir -p "$kit/include/$(dirname "${f#/usr/include/}")"
  cp "$f" "$kit/include/${f#/usr/include/}"
done
cp -r /usr/include/range /usr/include/meta /usr/include/concepts /usr/include/std \
  /usr/include/doctest "$kit/include/"
cp /usr/include/jpeglib.h /usr/include/jerror.h /usr/include/jmorecfg.h \
  /usr/include/x86_64-linux-gnu/jconfig.h "$kit/include/"
cp /usr/include/libpng16/*.h "$kit/include/libpng16/"
lib=/usr/lib/x86_64-linux-gnu
cp -L $lib/libjpeg.so.62 $lib/libpng16.so.16 /lib/x86_64-linux-gnu/libpkgconf.so.3 "$kit/lib/"
cp "$kit/lib/libjpeg.so.62" "$kit/lib/libjpeg.so"
cp "$kit/lib/libpng16.so.16" "$kit/lib/libpng16.so"
cp /usr/bin/pkgconf "$kit/bin/pkgconf"
for pc in "libjpeg jpeg include" "libpng png16 include/libpng16"; do
  read -r name l inc <<< "$pc"
  printf 'prefix=${pcfiledir}/../..\nName: %s\nDescription: %s from Debian 12\nVersion: %s\nLibs: -L${prefix}/lib -l%s\nCflags: -I${prefix}/%s\n' \
    "$name" "$name" "$(pkg-config --modversion "$name")" "$l" "$inc" > "$kit/lib/pkgconfig/$name.pc"
done
cat > "$kit/bin/pkg-config" <<'SH'
#!/bin/sh
here=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$here/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/pkgconf" "$@"
SH
chmod +x "$kit/bin/pkg-config"
# CPLUS_INCLUDE_PATH makes the kit's headers system headers (no warnings from them)
cat > "$kit/env.sh" <<'SH'
kit=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export BOOST_ROOT=$kit CPLUS_INCLUDE_PATH=$kit/include LIBRARY_PATH=$kit/lib
export LD_LIBRARY_PATH=$kit/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PKG_CONFIG_PATH=$kit/lib/pkgconfig PATH=$PATH:$kit/bin
SH
echo "make-deps-kit: $(du -sh "$kit" | cut -f1) in $kit; there: source $kit/env.sh"
