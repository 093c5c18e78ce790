#!/usr/bin/env bash
#
# demo.sh - the newcomer's tour of a libkvdist cluster: starts three
# kvdistd peers (n1, n2, n3) on this machine, then stores, reads, overwrites
# and deletes a key with the kvdist client, showing each command, and does
# the same over the HTTP API with curl (kvdist-http(7)).
#
#     examples/demo.sh BUILD_DIR        (what `make demo` runs)
#
# The peers talk over ipc:// sockets in a temporary directory. Each also
# serves HTTP on 127.0.0.1 at a port picked at run time (a node that loses
# the race for its port is restarted on another).
# Every node it starts is stopped by PID (never by name) and the directory
# removed on any exit, including a failed step or Ctrl-C. Waiting is done by
# polling with a bound, never by fixed sleeps. Exits non-zero if any step
# fails.

set -u

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
fi
BIN=$(cd "$1" && pwd)/examples
for b in kvdistd kvdist; do
    if [ ! -x "$BIN/$b" ]; then
        echo "demo: $BIN/$b is missing; run make first" >&2
        exit 2
    fi
done

T=$(mktemp -d "${TMPDIR:-/tmp}/kvdist-demo.XXXXXX") || exit 1
PIDS=()

# Stops every node this script started: SIGTERM, up to 5 s for a clean
# stop, then SIGKILL. Shows the nodes' logs when the demo failed.
cleanup() {
    local status=$? pid i alive
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    # One 5 s budget for all of them, as they stop in parallel.
    for ((i = 0; i < 50; i++)); do
        alive=0
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            echo "demo: node pid $pid did not stop in 5 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
    done
    if [ "$status" -ne 0 ]; then
        for log in "$T"/*.log; do
            [ -f "$log" ] || continue
            echo "---- $(basename "$log")" >&2
            tail -n 20 "$log" >&2
        done
        echo "demo: FAILED" >&2
    fi
    rm -rf "$T"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "demo: $*" >&2
    exit 1
}

url() {
    echo "ipc://$T/$1.sock"
}

# Polls "$@" every 0.1 s until it succeeds, for 10 s at most (counted by
# the clock, as one try may itself take a while).
wait_for() {
    local deadline=$((SECONDS + 10))
    while [ "$SECONDS" -lt "$deadline" ]; do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
}

declare -A HTTP_PORT

# Starts node $1, joining through node $2 if given, and waits until ready.
start_node() {
    local id=$1 seed=${2:-} attempt port pid
    for attempt in 1 2 3; do
        port=$(free_port)
        local args=(--id "$id" --listen "$(url "$id")" --data "$T/$id"
            --http "127.0.0.1:$port")
        if [ -n "$seed" ]; then
            args+=(--join "$(url "$seed")")
        fi
        echo "\$ kvdistd ${args[*]//"$T"/\$T} 2>\$T/$id.log &"
        "$BIN/kvdistd" "${args[@]}" 2>"$T/$id.log" &
        pid=$!
        if wait_for node_ready_or_gone "$id" "$pid" &&
            grep -q ready "$T/$id.log"; then
            PIDS+=("$pid")
            HTTP_PORT[$id]=$port
            return
        fi
        wait "$pid" 2>/dev/null
        grep -q "in use" "$T/$id.log" ||
            fail "node $id exited before it was ready"
        echo "demo: port $port was taken; trying another"
    done
    fail "node $id not ready after 3 attempts"
}

# True once node $1 (PID $2) logged "ready" or exited.
node_ready_or_gone() {
    grep -q ready "$T/$1.log" && return 0
    kill -0 "$2" 2>/dev/null || return 0
    return 1
}

# True once the node at URL $1 lists 3 members.
has_3_members() {
    [ "$("$BIN/kvdist" -c "$1" --timeout 1000 members 2>/dev/null |
        wc -l)" -eq 3 ]
}

# Shows a client command, runs it, shows its output, and checks that it
# exits with status $1. The temp dir is shown as $T, in the output too.
kv() {
    local want=$1 got
    shift
    echo "\$ kvdist ${*//"$T"/\$T}"
    "$BIN/kvdist" "$@" >"$T/out"
    got=$?
    sed "s|$T|\$T|g" "$T/out"
    if [ "$got" -ne "$want" ]; then
        fail "kvdist $* exited with $got, expected $want"
    fi
}

# As kv for a get, which must succeed and print exactly $1.
kv_get() {
    local want=$1
    shift
    kv 0 "$@"
    echo # get prints the value alone, without a newline
    if [ "$(cat "$T/out")" != "$want" ]; then
        fail "expected '$want', got '$(cat "$T/out")'"
    fi
}

echo "== a 3-node libkvdist cluster in \$T=$T"
start_node n1
start_node n2 n1
start_node n3 n1
N1=$(url n1)
N2=$(url n2)
N3=$(url n3)
for u in "$N1" "$N2" "$N3"; do
    wait_for has_3_members "$u" || fail "$u does not list 3 members after 10 s"
done
echo
echo "== write through n1, read through the others"
kv 0 -c "$N1" put colour red
kv_get red -c "$N2" get colour
kv 0 -c "$N3" put colour blue
kv_get blue -c "$N1" get colour
echo
echo "== which nodes hold the key (n=3: all of them, in ring order)"
kv 0 -c "$N2" where colour
echo
echo "== delete, then get exits 1 (not found)"
kv 0 -c "$N1" del colour
kv 1 -c "$N3" get colour
echo
echo "== the members, as n2 sees them"
kv 0 -c "$N2" members
echo
echo "== an anti-entropy pass on n3: compare Merkle trees with n1 and n2"
kv 0 -c "$N1" repair n3
echo

# Shows a curl command (run with -s), its output, and checks the status.
http() {
    local want=$1 got
    shift
    echo "\$ curl $(printf '%q ' "$@")"
    got=$(curl -s -o "$T/out" -w '%{http_code}' "$@") ||
        fail "curl $* failed"
    cat "$T/out"
    [ -s "$T/out" ] && [ "$(tail -c 1 "$T/out" | od -An -c)" != '  \n' ] && echo
    [ "$got" = "$want" ] || fail "curl $*: status $got, expected $want"
}

if command -v curl >/dev/null; then
    H1="http://127.0.0.1:${HTTP_PORT[n1]}"
    H2="http://127.0.0.1:${HTTP_PORT[n2]}"
    H3="http://127.0.0.1:${HTTP_PORT[n3]}"
    echo "== the same over HTTP (n1 at $H1, n2 at $H2, n3 at $H3)"
    http 204 -X PUT --data-binary 'green' "$H1/v1/data/colour"
    http 200 -i "$H2/v1/data/colour"
    http 204 -X PUT --data-binary 'bytes too' "$H3/v1/data/key%20with%2Fslash%00nul"
    http 200 "$H1/v1/data/key%20with%2Fslash%00nul"
    http 204 -X DELETE "$H2/v1/data/colour"
    http 404 "$H3/v1/data/colour"
    http 200 "$H1/health"
    echo
else
    echo "== (curl is not installed: skipping the HTTP part)"
fi
echo "demo: ok"
