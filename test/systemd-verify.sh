#!/usr/bin/env bash
# systemd-verify.sh - checks examples/systemd/ the way systemd reads it:
# `systemd-analyze verify` on each unit (the template through an instance),
# with ExecStart pointed at the daemon just built (verify insists that the
# binary exists). A warning counts as a failure: systemd only warns about
# an unknown or misspelt key, and then runs without it. Also checks the
# settings the units promise (their own user, --config, restart on failure,
# the open-file limit, a bounded SIGTERM stop).
# Run by `make check` as: test/systemd-verify.sh BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
daemon=$(cd "$build/examples" && pwd)/kvdistd
[ -x "$daemon" ] || { echo "systemd-verify: $daemon not built" >&2; exit 1; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/kvdist-units.XXXXXX")
trap 'rm -rf "$dir"' EXIT
fail=0
for unit in examples/systemd/kvdistd.service examples/systemd/kvdistd@.service; do
    for key in '^User=kvdist$' '^ExecStart=/usr/local/bin/kvdistd --config /etc/kvdist/' \
               '^Restart=on-failure$' '^LimitNOFILE=[0-9]+$' '^KillSignal=SIGTERM$' \
               '^TimeoutStopSec=[0-9]+s$' '^StateDirectoryMode=0700$' '^UMask=0077$'; do
        grep -Eq "$key" "$unit" || { echo "systemd-verify: $unit lacks $key" >&2; fail=1; }
    done
done
sed "s|/usr/local/bin/kvdistd|$daemon|" examples/systemd/kvdistd.service \
    > "$dir/kvdistd.service"
sed "s|/usr/local/bin/kvdistd|$daemon|" examples/systemd/kvdistd@.service \
    > "$dir/kvdistd@.service"
cp "$dir/kvdistd@.service" "$dir/kvdistd@n1.service"
# --man=no: the man pages are not installed where verify looks for them.
if ! out=$(cd "$dir" && systemd-analyze verify --man=no ./kvdistd.service \
        ./kvdistd@n1.service 2>&1) || [ -n "$out" ]; then
    echo "systemd-verify: systemd-analyze verify says:" >&2
    echo "$out" >&2
    fail=1
fi
[ $fail = 0 ] && echo "systemd-verify: kvdistd.service and kvdistd@.service verified"
exit $fail
