#!/usr/bin/env bash
# install.sh - checks `make install` and `make uninstall` the way a user
# meets them: installs into a scratch prefix, builds examples/embed.c
# against the installed copy with pkg-config alone, runs it, then
# uninstalls and checks that nothing the install put there is left.
# Run by `make check` (as test/install.sh BUILD_FLAGS...).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=$(mktemp -d "${TMPDIR:-/tmp}/kvdist-install.XXXXXX")
trap 'rm -rf "$prefix"' EXIT
make -s install PREFIX="$prefix" "$@" >/dev/null
for f in include/kvdist.h lib/libkvdist.a lib/pkgconfig/kvdist.pc \
         share/man/man3/kvdist.3 share/man/man7/kvdist.7 bin/kvdistd bin/kvdist \
         bin/kvdist-embed; do
    [ -e "$prefix/$f" ] || { echo "install: $f missing" >&2; exit 1; }
done
soname=$(readelf -d "$prefix"/lib/libkvdist.so | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
[ "$soname" = "libkvdist.so.0" ] || { echo "install: soname is '$soname'" >&2; exit 1; }
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cc -std=c11 -Wall -Wextra -Werror examples/embed.c -o "$prefix/embed" \
    $(pkg-config --cflags --libs kvdist) -Wl,-rpath,"$prefix/lib"
"$prefix/embed" "$prefix/data" | grep -q '^ok$' \
    || { echo "install: embed against the installed library failed" >&2; exit 1; }
# the static library links too, with the private dependencies pkg-config lists
cc -std=c11 examples/embed.c -o "$prefix/embed-static" \
    $(pkg-config --cflags kvdist) "$prefix/lib/libkvdist.a" \
    $(pkg-config --static --libs-only-l kvdist | sed 's/-lkvdist//') -lstdc++ -lm
rm -rf "$prefix/data"
make -s uninstall PREFIX="$prefix" "$@" >/dev/null
rm -rf "$prefix/data" "$prefix/embed" "$prefix/embed-static"
left=$(find "$prefix" -type f -o -type l)
[ -z "$left" ] || { echo "install: uninstall left: $left" >&2; exit 1; }
echo "install: make install/uninstall, pkg-config build of embed.c: ok"
