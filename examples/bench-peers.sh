#!/usr/bin/env bash
# bench-peers.sh - libkvdist next to Redis, measured in one run on this
# machine (make bench-peers).
#
#   1. a 3-node kvdistd cluster on 127.0.0.1 (N=3 R=2 W=2, sync=wal), driven
#      through one node's RESP port by redis-benchmark;
#   2. a plain local redis-server (no persistence), same redis-benchmark;
#   3. redis-server with two replicas and AOF everysec on all three: plain
#      SETs by redis-benchmark, then SET followed by WAIT 1 0 (the closest
#      Redis gets to W=2) by kvdist-bench's resp target, because
#      redis-benchmark sends one command per request and Redis refuses
#      WAIT inside MULTI or scripts. The same kvdist-bench run against the
#      kvdistd cluster gives the like-for-like line.
# Every server gets a free port and its own temp dir and is stopped by
# PID, also on failure or ^C. Usage: bench-peers.sh BUILD_DIR
set -u
BUILD=${1:-build}
BIN=$BUILD/examples
REQS=${BENCH_PEERS_REQUESTS:-100000}
CLIENTS=${BENCH_PEERS_CLIENTS:-50}
SECS=${BENCH_PEERS_SECONDS:-10}
for t in redis-server redis-benchmark redis-cli; do
    command -v $t >/dev/null || { echo "bench-peers: $t not found (apt-get install redis-server redis-tools)"; exit 1; }
done
[ -x "$BIN/kvdistd" ] && [ -x "$BIN/kvdist-bench" ] || { echo "bench-peers: build first (make)"; exit 1; }

DIR=$(mktemp -d "${TMPDIR:-/tmp}/kvdist-peers.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    PIDS=()
}
trap 'cleanup; rm -rf "$DIR"' EXIT
trap 'exit 130' INT TERM

# A port nothing listens on (a later bind can still lose a race: the
# server then fails to start and the script says so).
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000)) # below Linux's ephemeral range
        (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; return; }
    done
}

wait_for() { # timeout-seconds command...
    local t=$1; shift
    for _ in $(seq $((t * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}

# redis-benchmark -q --csv prints "test","rps",...: the rps of one test.
rb() { # port test
    redis-benchmark -h 127.0.0.1 -p "$1" -t "$2" -d 1024 -c "$CLIENTS" \
        -r 100000 -n "$REQS" --csv 2>/dev/null | awk -F'"' -v t="$(echo "$2" | tr a-z A-Z)" \
        '$2==t {print int($4)}'
}

# kvdist-bench resp target, workload W: puts/s.
kb_puts() { # addr [extra...]
    local addr=$1; shift
    "$BIN/kvdist-bench" --target resp --addr "$addr" --workload W \
        --outstanding "$CLIENTS" --value-size 1024 --keys 100000 --no-load \
        --duration "$SECS" --quiet --json "$@" | sed -n 's/.*"update":{"count":[0-9]*,"ops_per_s":\([0-9.]*\).*/\1/p' | cut -d. -f1
}

echo "== kvdistd: 3 nodes, n=3 r=2 w=2, sync=wal, RESP on node 1"
URLS=""
for i in 1 2 3; do
    for attempt in 1 2 3; do
        port=$(free_port); rport=$(free_port)
        args=(--id n$i --data "$DIR/n$i" --listen tcp://127.0.0.1:$port --n 3 --r 2 --w 2 --sync wal --resp 127.0.0.1:$rport)
        [ $i -gt 1 ] && args+=(--join "$FIRST")
        "$BIN/kvdistd" "${args[@]}" >"$DIR/n$i.log" 2>&1 &
        pid=$!
        started() { grep -q ready "$DIR/n$i.log" || ! kill -0 $pid; }
        wait_for 15 started
        grep -q ready "$DIR/n$i.log" && break
        wait $pid 2>/dev/null
        grep -q "in use" "$DIR/n$i.log" && [ $attempt -lt 3 ] && continue
        echo "kvdistd n$i did not start:"; cat "$DIR/n$i.log"; exit 1
    done
    PIDS+=($pid)
    [ $i = 1 ] && { FIRST=tcp://127.0.0.1:$port; RESP=$rport; }
    URLS="$URLS${URLS:+,}tcp://127.0.0.1:$port"
done
converged() { [ "$("$BIN/kvdist" -c "$URLS" members 2>/dev/null | grep -c ' up')" = 3 ]; }
wait_for 20 converged || { echo "the cluster did not converge"; exit 1; }
KV_SET=$(rb $RESP set); KV_GET=$(rb $RESP get)
KV_WAIT=$(kb_puts 127.0.0.1:$RESP)
cleanup

echo "== redis-server: plain (no persistence)"
P=$(free_port)
redis-server --port $P --bind 127.0.0.1 --dir "$DIR" --save '' --appendonly no \
    --daemonize no >"$DIR/redis.log" 2>&1 &
PIDS+=($!)
wait_for 10 redis-cli -p $P ping || { echo "redis-server did not start"; exit 1; }
R_SET=$(rb $P set); R_GET=$(rb $P get)
cleanup

echo "== redis-server: primary + 2 replicas, appendonly everysec"
P1=$(free_port); P2=$(free_port); P3=$(free_port)
mkdir -p "$DIR/r1" "$DIR/r2" "$DIR/r3"
redis-server --port $P1 --bind 127.0.0.1 --dir "$DIR/r1" --save '' --appendonly yes \
    --appendfsync everysec --daemonize no >"$DIR/r1.log" 2>&1 &
PIDS+=($!)
wait_for 10 redis-cli -p $P1 ping || { echo "redis primary did not start"; exit 1; }
for pr in "$P2 r2" "$P3 r3"; do
    set -- $pr
    redis-server --port $1 --bind 127.0.0.1 --dir "$DIR/$2" --save '' --appendonly yes \
        --appendfsync everysec --replicaof 127.0.0.1 $P1 --daemonize no >"$DIR/$2.log" 2>&1 &
    PIDS+=($!)
done
replicas_up() { redis-cli -p $P1 info replication | grep -q 'connected_slaves:2'; }
wait_for 20 replicas_up || { echo "replicas did not connect"; exit 1; }
RR_SET=$(rb $P1 set); RR_GET=$(rb $P1 get)
RR_WAIT=$(kb_puts 127.0.0.1:$P1 --wait 1)
cleanup

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
echo
echo "redis-benchmark -t set,get -d 1024 -c $CLIENTS -r 100000 -n $REQS; kvdist-bench"
echo "--target resp --workload W --outstanding $CLIENTS --value-size 1024 --duration $SECS;"
echo "$(nproc) cores, $(uname -m), $(redis-server --version | awk '{print $3}')"
echo
echo "| system | SET/s | GET/s | SET+WAIT 1 or W=2 /s (kvdist-bench) | SET vs Redis | GET vs Redis |"
echo "|---|---:|---:|---:|---:|---:|"
echo "| kvdistd 3 nodes N=3 R=2 W=2 sync=wal | $KV_SET | $KV_GET | $KV_WAIT | $(ratio "$KV_SET" "$R_SET") | $(ratio "$KV_GET" "$R_GET") |"
echo "| redis plain | $R_SET | $R_GET | - | 1.00x | 1.00x |"
echo "| redis + 2 replicas, AOF everysec | $RR_SET | $RR_GET | $RR_WAIT | $(ratio "$RR_SET" "$R_SET") | $(ratio "$RR_GET" "$R_GET") |"
