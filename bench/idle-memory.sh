#!/usr/bin/env bash
# Idle memory per connection: how much resident memory a server gains per open, idle
# keep-alive connection, plain and TLS, sockhost against nginx (and, plain, a tokio echo
# server), in one run.
#
# For each server: start it, read VmRSS, open CONNS idle connections with `loadgen idle`
# (each proven accepted by one `GET /` and its whole response, over TLS with a full
# handshake for the TLS rows; an echo round trip for the echo rows), read VmRSS again
# SETTLE seconds after they are all open, and report (after - before) / CONNS. Kernel socket
# buffers are not part of RSS and are not counted.
#
# Usage: bench/idle-memory.sh        (from anywhere; needs ~20000 fds, see ulimit below)
# Environment: CONNS (10000), HOLD seconds loadgen keeps them open (8), SETTLE seconds to
#              wait after `opened` before reading RSS (1), RATE connections per second
#              (0: as fast as 64 parallel connects go), ROWS ("plain tls echo"),
#              NO_BUILD=1 to skip the build.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

CONNS=${CONNS:-10000}
HOLD=${HOLD:-8}
SETTLE=${SETTLE:-1}
RATE=${RATE:-0}
ROWS=${ROWS:-"plain tls echo"}

# loadgen holds CONNS fds and the server CONNS more, each in its own process.
ulimit -n 20000 || die "cannot raise the fd limit to 20000 (ulimit -Hn is $(ulimit -Hn))"

[[ ${NO_BUILD:-} == 1 ]] || build_release

RESULTS=()
FAILED=0
NOTE=""

# measure NAME PID ADDR [loadgen idle flags...]: one server's row (see measure_idle in
# lib.sh).
measure() {
    local name=$1
    measure_idle "$@" --rate "$RATE"
    ((IDLE_OK)) || FAILED=1
    RESULTS+=("$(printf '%-22s %14s %14s %15s %12s' "$name" "$IDLE_BEFORE" "$IDLE_AFTER" \
        "$IDLE_PER_CONN" "$IDLE_SEEN/$IDLE_OPENED")")
}

row_on() { [[ " $ROWS " == *" $1 "* ]]; }

# sockhost, thread mode, hello (HTTP), connections never timed out.
sockhost() {
    start_server "$1" "$RELEASE/sockhost" --plugin "$RELEASE/libhello.so" --bind 127.0.0.1:0 \
        --concurrency thread --keep-alive 0 --max-connections $((CONNS + 100)) "${@:2}"
}

if row_on plain; then
    sockhost sockhost-plain
    measure "sockhost+hello" "$SERVER_PID" "$SERVER_ADDR" --probe http
    stop_server "$SERVER_PID"
    start_nginx nginx-plain 1 "$ALL_CPUS"
    measure "nginx" "$NGINX_WORKER" "$NGINX_ADDR" --probe http
    stop_server "$NGINX_PID"
    NOTE="nginx: its 20000 worker_connections slots (~0.4 KB each) are allocated at start-up, so they are in rss_before."
fi

if row_on tls; then
    make_cert
    sockhost sockhost-tls --cert-file "$CERT" --key-file "$KEY"
    measure "sockhost+hello TLS" "$SERVER_PID" "$SERVER_ADDR" --probe http --tls
    stop_server "$SERVER_PID"
    start_nginx nginx-tls 1 "$ALL_CPUS" "$CERT" "$KEY"
    measure "nginx TLS" "$NGINX_WORKER" "$NGINX_ADDR" --probe http --tls
    stop_server "$NGINX_PID"
fi

if row_on echo; then
    start_server sockhost-echo "$RELEASE/sockhost" --plugin "$RELEASE/libecho.so" --bind 127.0.0.1:0 \
        --concurrency thread --keep-alive 0 --max-connections $((CONNS + 100))
    measure "sockhost+echo" "$SERVER_PID" "$SERVER_ADDR"
    stop_server "$SERVER_PID"
    start_server echo-baseline "$RELEASE/echo-baseline" --bind 127.0.0.1:0
    measure "echo-baseline (tokio)" "$SERVER_PID" "$SERVER_ADDR"
    stop_server "$SERVER_PID"
fi

echo
echo "Idle memory per connection ($CONNS idle connections, RSS from /proc/PID/status)"
printf '%-22s %14s %14s %15s %12s\n' server rss_before_kb rss_after_kb bytes_per_conn "conns(ss)"
printf '%s\n' "${RESULTS[@]}"
[[ -z $NOTE ]] || echo "note: $NOTE"
exit "$FAILED"
