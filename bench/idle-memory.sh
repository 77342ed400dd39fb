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

# measure NAME PID PORT ADDR [loadgen idle flags...]: the measurement for one running
# server whose memory is in process PID.
measure() {
    local name=$1 pid=$2 port=$3 addr=$4
    shift 4
    sleep 0.3
    local before after opened line i
    before=$(rss_kb "$pid")
    local log="$BENCH_TMP/$name.loadgen"
    "$RELEASE/loadgen" idle --addr "$addr" --connections "$CONNS" --hold "$HOLD" "$@" \
        >"$log" 2>"$log.err" &
    local lg=$!
    BENCH_PIDS+=("$lg")
    line=""
    for ((i = 0; i < 1200; i++)); do
        line=$(grep -m1 '^opened' "$log" || true)
        [[ -n $line ]] && break
        kill -0 "$lg" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n $line ]] || {
        cat "$log.err" >&2
        die "$name: loadgen never printed 'opened'"
    }
    opened=$(awk '{ print $2 }' <<<"$line")
    sleep "$SETTLE"
    after=$(rss_kb "$pid")
    local seen
    seen=$(established "$port")
    if ! wait "$lg"; then
        echo "# $name: loadgen reported a problem:" >&2
        cat "$log" "$log.err" >&2
        FAILED=1
    fi
    local per=$(((after - before) * 1024 / (opened > 0 ? opened : 1)))
    RESULTS+=("$(printf '%-22s %14s %14s %15s %12s' "$name" "$before" "$after" "$per" "$seen/$opened")")
    echo "# $name: $line; server saw $seen established; rss ${before} -> ${after} KiB" >&2
}

port_of() {
    echo "${1##*:}"
}

# (a) sockhost, thread mode, echo plugin, connections never timed out.
start_server sockhost "$RELEASE/sockhost" --plugin "$RELEASE/libecho.so" --bind 127.0.0.1:0 \
    --concurrency thread --keep-alive 0 --max-connections $((CONNS + 100))
measure "sockhost-thread+echo" "$SERVER_PID" "$(port_of "$SERVER_ADDR")" "$SERVER_ADDR"
stop_server "$SERVER_PID"

# (b) the plain tokio echo server.
start_server echo-baseline "$RELEASE/echo-baseline" --bind 127.0.0.1:0
measure "echo-baseline" "$SERVER_PID" "$(port_of "$SERVER_ADDR")" "$SERVER_ADDR"
stop_server "$SERVER_PID"

# (c) nginx, only if it is already installed: one worker, HTTP keep-alive connections on
# which no request is ever sent (so no echo probe: loadgen --no-probe). nginx allocates
# and initialises all worker_connections slots (connection + 2 events, ~400 B each) at
# start-up, so that part is already in rss_before; the per-connection figure is what an
# accepted idle connection adds on top (its pool; the header buffer waits for data).
if command -v nginx >/dev/null 2>&1; then
    port=""
    for ((i = 0; i < 50; i++)); do
        p=$((20000 + RANDOM % 20000))
        if [[ -z $(ss -Htln "( sport = :$p )" 2>/dev/null) ]]; then
            port=$p
            break
        fi
    done
    [[ -n $port ]] || die "no free port for nginx"
    ngx="$BENCH_TMP/nginx"
    mkdir -p "$ngx/logs" "$ngx/tmp"
    cat >"$ngx/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $ngx/nginx.pid;
error_log $ngx/logs/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    keepalive_timeout 3600;
    client_header_timeout 3600;
    client_body_temp_path $ngx/tmp/body;
    proxy_temp_path $ngx/tmp/proxy;
    fastcgi_temp_path $ngx/tmp/fastcgi;
    uwsgi_temp_path $ngx/tmp/uwsgi;
    scgi_temp_path $ngx/tmp/scgi;
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
EOF
    nginx -p "$ngx" -e "$ngx/logs/error.log" -c "$ngx/nginx.conf" >"$ngx/stdout" 2>&1 &
    master=$!
    BENCH_PIDS+=("$master")
    worker=""
    for ((i = 0; i < 100; i++)); do
        if [[ -n $(ss -Htln "( sport = :$port )" 2>/dev/null) ]]; then
            worker=$(awk '{ print $1 }' "/proc/$master/task/$master/children" 2>/dev/null || true)
            [[ -n $worker ]] && break
        fi
        kill -0 "$master" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -n $worker ]]; then
        NOTE="nginx-worker: its 20000 (worker_connections) preallocated connection slots are in rss_before."
        measure "nginx-worker" "$worker" "$port" "127.0.0.1:$port" --no-probe --rate 20000
    else
        echo "# nginx did not start; skipped:" >&2
        cat "$ngx/stdout" "$ngx/logs/error.log" >&2 || true
    fi
    stop_server "$master"
else
    echo "# nginx is not installed; skipped" >&2
fi

echo
echo "Idle memory per connection ($CONNS idle connections, RSS from /proc/PID/status)"
printf '%-22s %14s %14s %15s %12s\n' server rss_before_kb rss_after_kb bytes_per_conn "conns(ss)"
printf '%s\n' "${RESULTS[@]}"
[[ -z ${NOTE:-} ]] || echo "note: $NOTE"
exit "$FAILED"
