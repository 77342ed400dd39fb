#!/usr/bin/env bash
# Idle memory per connection: how much resident memory a server gains per open, idle TCP
# connection. It exists to keep sockhost's per-connection footprint (host state, plugin
# consumer, buffers) visible next to a plain tokio echo server (and nginx, if installed).
#
# For each server: start it, read VmRSS, open CONNS idle connections with
# `loadgen idle` (each proven accepted by a 1-byte echo round trip), read VmRSS again
# once they are all open, and report (after - before) / CONNS. Kernel socket buffers are
# not part of RSS and are not counted.
#
# Usage: bench/idle-memory.sh            (from anywhere; needs ~20000 fds, see ulimit below)
# Environment: CONNS (10000), HOLD seconds loadgen keeps them open (8), SETTLE seconds
#              to wait after `opened` before reading RSS (1), NO_BUILD=1 to skip the build.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

CONNS=${CONNS:-10000}
HOLD=${HOLD:-8}
SETTLE=${SETTLE:-1}

# loadgen holds CONNS fds and the server CONNS more, each in its own process.
ulimit -n 20000 || die "cannot raise the fd limit to 20000 (ulimit -Hn is $(ulimit -Hn))"

[[ ${NO_BUILD:-} == 1 ]] || build_release

RESULTS=()
FAILED=0

# measure NAME PID ADDR [loadgen idle flags...]: one server's row (see measure_idle in
# lib.sh).
measure() {
    local name=$1
    measure_idle "$@"
    ((IDLE_OK)) || FAILED=1
    RESULTS+=("$(printf '%-22s %14s %14s %15s %12s' "$name" "$IDLE_BEFORE" "$IDLE_AFTER" \
        "$IDLE_PER_CONN" "$IDLE_SEEN/$IDLE_OPENED")")
}

# (a) sockhost, thread mode, echo plugin, connections never timed out.
start_server sockhost "$RELEASE/sockhost" --plugin "$RELEASE/libecho.so" --bind 127.0.0.1:0 \
    --concurrency thread --keep-alive 0 --max-connections $((CONNS + 100))
measure "sockhost-thread+echo" "$SERVER_PID" "$SERVER_ADDR"
stop_server "$SERVER_PID"

# (b) the plain tokio echo server.
start_server echo-baseline "$RELEASE/echo-baseline" --bind 127.0.0.1:0
measure "echo-baseline" "$SERVER_PID" "$SERVER_ADDR"
stop_server "$SERVER_PID"

# (c) nginx, only if it is already installed: one worker, HTTP keep-alive connections on
# which no request is ever sent (so no echo probe: loadgen --no-probe). nginx allocates
# and initialises all worker_connections slots (connection + 2 events, ~400 B each) at
# start-up, so that part is already in rss_before; the per-connection figure is what an
# accepted idle connection adds on top (its pool; the header buffer waits for data).
# (bench/run.sh measures sockhost+hello against nginx with one request per connection.)
if command -v nginx >/dev/null 2>&1; then
    start_nginx nginx 1 "$ALL_CPUS"
    NOTE="nginx-worker: its 20000 (worker_connections) preallocated connection slots are in rss_before."
    measure "nginx-worker" "$NGINX_WORKER" "$NGINX_ADDR" --no-probe --rate 20000
    stop_server "$NGINX_PID"
else
    echo "# nginx is not installed; skipped" >&2
fi

echo
echo "Idle memory per connection ($CONNS idle connections, RSS from /proc/PID/status)"
printf '%-22s %14s %14s %15s %12s\n' server rss_before_kb rss_after_kb bytes_per_conn "conns(ss)"
printf '%s\n' "${RESULTS[@]}"
[[ -z ${NOTE:-} ]] || echo "note: $NOTE"
exit "$FAILED"
