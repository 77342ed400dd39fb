#!/usr/bin/env bash
# Process mode: how evenly connections spread over the workers, and how long a reload
# takes. For WORKERS in 2 and 4: start sockhost with libecho, run a 200-connection echo load
# (each connection opened once, so the spread is decided by the kernel's SO_REUSEPORT hash),
# then a connect-rate load (each round trip a new connection), stop gracefully and print
# each worker's accepted count from the arbiter's log. Then time HUP -> reload finished.
#
# Usage: bench/spread.sh   Environment: NO_BUILD=1, DURATION (3), CONNS (200).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

DURATION=${DURATION:-3}
CONNS=${CONNS:-200}
ulimit -n 20000 2>/dev/null || true
[[ ${NO_BUILD:-} == 1 ]] || build_release

# spread NAME LOAD...: a fresh server, one load, then each worker's accepted count.
spread() {
    local name=$1 workers=$2
    shift 2
    start_server "$name" "$RELEASE/sockhost" --plugin "$RELEASE/libecho.so" \
        --bind 127.0.0.1:0 --workers "$workers" --keep-alive 0
    "$RELEASE/loadgen" "$@" --addr "$SERVER_ADDR" --duration "$DURATION" >/dev/null
    stop_server "$SERVER_PID"
    sed -n 's/.*worker exited.*accepted=\([0-9]*\).*/\1/p' "$BENCH_TMP/$name.err" | sort -n | tr '\n' ' '
}

for workers in 2 4; do
    echo "workers=$workers, $CONNS long-lived echo connections, accepted per worker: $(spread "long$workers" "$workers" echo --connections "$CONNS" --size 64 --warmup 0)"
    echo "workers=$workers, connect loop (new connection per round trip), accepted per worker: $(spread "churn$workers" "$workers" connect --concurrency 8)"
done

start_server reload "$RELEASE/sockhost" --plugin "$RELEASE/libecho.so" --bind 127.0.0.1:0 --workers 4
for i in 1 2 3; do
    before=$(grep -c "reload finished" "$BENCH_TMP/reload.err" || true)
    start=$(date +%s%N)
    kill -HUP "$SERVER_PID"
    until [[ $(grep -c "reload finished" "$BENCH_TMP/reload.err" || true) -gt $before ]]; do sleep 0.005; done
    end=$(date +%s%N)
    logged=$(grep "reload finished" "$BENCH_TMP/reload.err" | tail -n 1 | sed -n 's/.*elapsed_ms=\([0-9]*\).*/\1/p')
    echo "reload $i (4 workers): HUP -> only new workers accept: ${logged} ms (arbiter's log), $(((end - start) / 1000000)) ms seen from outside"
done
