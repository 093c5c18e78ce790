#!/usr/bin/env bash
# fresh-debian.sh - README's two commands on a machine that has never seen
# this project: builds a minimal Debian 12 (bookworm) with debootstrap,
# holding only what a C developer's machine has (build-essential, git,
# pkg-config, ca-certificates), clones this repository into it, and runs
# `make demo` then `make check` there as root, in a chroot. CI cannot
# catch a missing install step (its machine keeps every package installed
# before); this can. Needs root, the Debian mirror this host's apt uses
# (or DEBIAN_MIRROR=URL) and several minutes; `make check-fresh` runs it.
#
#   test/fresh-debian.sh [REPO]     REPO: a git repository (default: this
#                                   one); its HEAD commit is what is tested
# Environment: DEBIAN_MIRROR, FRESH_DIR (where the root is built, default
# under /var/tmp), KEEP=1 (keep the root afterwards), FRESH_TARGETS
# (default "demo check").
set -euo pipefail
repo=$(cd "${1:-$(dirname "$0")/..}" && git rev-parse --show-toplevel)
targets=${FRESH_TARGETS:-demo check}
[ "$(id -u)" = 0 ] || { echo "fresh-debian: must run as root (debootstrap, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || {
    echo "fresh-debian: installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -q --no-install-recommends debootstrap; }
}

# The mirror this host's apt already uses, so the script names none.
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)\/*$/\1/p' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "fresh-debian: no Debian mirror found; set DEBIAN_MIRROR" >&2; exit 1; }

root=$(mktemp -d "${FRESH_DIR:-/var/tmp}/kvdist-fresh.XXXXXX")
mounted=()
cleanup() {
    local i
    for (( i=${#mounted[@]}-1; i>=0; i-- )); do
        umount -l "${mounted[$i]}" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then
        echo "fresh-debian: kept $root"
    else
        rm -rf --one-file-system "$root"
    fi
}
trap cleanup EXIT
mnt() { mount "$@"; mounted+=("${@: -1}"); }

start=$(date +%s)
echo "fresh-debian: debootstrap bookworm into $root from $mirror"
debootstrap --variant=minbase --include=build-essential,git,pkg-config,ca-certificates \
    bookworm "$root" "$mirror" > "$root.debootstrap.log" 2>&1 || {
    tail -n 30 "$root.debootstrap.log" >&2; rm -f "$root.debootstrap.log"
    echo "fresh-debian: debootstrap failed" >&2; exit 1; }
rm -f "$root.debootstrap.log"
echo "fresh-debian: base system ready after $(( $(date +%s) - start ))s;" \
     "$(chroot "$root" dpkg-query -W -f='.\n' | wc -l) packages installed"
# debootstrap writes only the main suite; add the others the host uses.
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
    : > "$root/etc/apt/sources.list"
fi
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true

mnt -t proc proc "$root/proc"
mnt -t sysfs sys "$root/sys"
mnt --bind /dev "$root/dev"
mnt -t devpts devpts "$root/dev/pts" -o newinstance,ptmxmode=0666
mnt -t tmpfs tmpfs "$root/dev/shm"
mnt -t tmpfs tmpfs "$root/run"
mnt -t tmpfs tmpfs "$root/tmp"

git clone -q --no-local "$repo" "$root/root/libkvdist"
echo "fresh-debian: testing $(git -C "$root/root/libkvdist" log -1 --format='%h %s')"
for t in $targets; do
    t0=$(date +%s)
    echo "fresh-debian: == make $t"
    rc=0
    chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        /bin/bash -c "cd /root/libkvdist && make $t" 2>&1 \
        > "$root.make-$t.log" || rc=$?
    if [ "$rc" = 0 ]; then
        tail -n 25 "$root.make-$t.log"
    else
        tail -n 200 "$root.make-$t.log"
    fi
    rm -f "$root.make-$t.log"
    echo "fresh-debian: make $t exited $rc after $(( $(date +%s) - t0 ))s"
    [ "$rc" = 0 ] || { echo "fresh-debian: FAILED at make $t" >&2; exit 1; }
done
echo "fresh-debian: ok (make $targets) in $(( $(date +%s) - start ))s"
