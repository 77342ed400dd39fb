#!/usr/bin/env bash
# System calls per request, counted by the kernel: sockhost (thread mode) + libhello vs nginx
# (one worker) under wrk, and sockhost + libecho vs echo-baseline (plain tokio) under
# loadgen echo. For each server the run is counted with `perf stat` on the syscall
# tracepoints (raw_syscalls:sys_enter and the calls that matter, plus the reads that
# returned EAGAIN and the epoll_waits that returned nothing), which costs the server far
# less than strace (a ptrace stop per call, which changes how requests batch) or
# `perf trace` (slow enough that the next request is always there before a second read).
# Also the server's voluntary context switches per request (sleeps in epoll_wait).
#
#   bench/syscalls.sh                    # about 1 minute; needs perf, wrk, nginx, root
#   ONLY="http" SECS=5 bench/syscalls.sh
#   RELEASE=/other/target/release NO_BUILD=1 bench/syscalls.sh    # another build
#
# Server on CPU 0, load on CPU 1, both at real-time priority (as bench/run.sh). The counts
# per request depend a little on load (how many requests one epoll_wait returns), so
# compare servers within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

SECS=${SECS:-3}
ONLY=${ONLY:-"http echo"}
SERVER_CPU=0
CLIENT_CPU=1
command -v perf >/dev/null || die "perf not found (Debian: linux-perf)"
ensure_packages nginx=nginx wrk=wrk
[[ ${NO_BUILD:-} == 1 ]] || build_release

CALLS=(recvfrom sendto writev read write readv epoll_wait)

# count NAME PID REQUESTS_FILE CMD...: run CMD (the load, pinned to the client CPU) while
# perf counts PID's system calls; print one line per request-relevant call.
count() {
    local name=$1 pid=$2
    shift 2
    local ev=raw_syscalls:sys_enter c out="$BENCH_TMP/$name.perf" load="$BENCH_TMP/$name.load"
    for c in "${CALLS[@]}"; do ev+=",syscalls:sys_enter_$c"; done
    local cs0 cs1
    cs0=$(awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$pid/status")
    perf stat -x, -o "$out" -e "$ev" \
        -e syscalls:sys_exit_recvfrom --filter 'ret == -11' \
        -e syscalls:sys_exit_epoll_wait --filter 'ret == 0' -p "$pid" &
    local perf_pid=$!
    sleep 0.5 # perf attaches
    "${PRIO[@]}" taskset -c $CLIENT_CPU "$@" >"$load" 2>&1 || die "$name: load failed: $(tail -n 3 "$load")"
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    cs1=$(awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$pid/status")
    local reqs
    if grep -q 'requests in' "$load"; then
        reqs=$(awk '/requests in/ { print $1 }' "$load")
    else
        reqs=$(json_get msgs "$(tail -n 1 "$load")")
    fi
    awk -F, -v r="$reqs" -v name="$name" -v cs=$((cs1 - cs0)) '
        $1 ~ /^[0-9]+$/ {
            ev = $3; sub(/^(raw_)?syscalls:sys_/, "", ev)
            if (ev == "enter") ev = "all"; else if (ev == "exit_recvfrom") ev = "recvfrom EAGAIN";
            else if (ev == "exit_epoll_wait") ev = "epoll_wait empty"; else sub(/^enter_/, "", ev)
            if ($1 / r >= 0.0005) line = line sprintf("  %s %.3f", ev, $1 / r)
        }
        END { printf "%-34s %9d req  %s  sleeps %.4f\n", name, r, line, cs / r }' "$out"
}

echo "# system calls per request (and voluntary context switches per request); $(uptime)"
if [[ " $ONLY " == *" http "* ]]; then
    start_server hello "${PRIO[@]}" taskset -c $SERVER_CPU "$RELEASE/sockhost" --plugin "$RELEASE/libhello.so" \
        --bind 127.0.0.1:0 --concurrency thread --keep-alive 0
    SH_PID=$SERVER_PID SH_ADDR=$SERVER_ADDR
    start_nginx nginx 1 $SERVER_CPU
    for c in 50 500; do
        for side in sockhost nginx; do
            if [[ $side == sockhost ]]; then pid=$SH_PID addr=$SH_ADDR; else pid=$NGINX_WORKER addr=$NGINX_ADDR; fi
            "${PRIO[@]}" taskset -c $CLIENT_CPU wrk -t1 -c$c -d1s "http://$addr/" >/dev/null # warm-up
            count "HTTP $side, wrk -c$c" "$pid" wrk -t1 -c$c -d"${SECS}s" "http://$addr/"
        done
    done
    stop_server "$SH_PID"
    stop_server "$NGINX_PID"
fi
if [[ " $ONLY " == *" echo "* ]]; then
    start_server echo "${PRIO[@]}" taskset -c $SERVER_CPU "$RELEASE/sockhost" --plugin "$RELEASE/libecho.so" \
        --bind 127.0.0.1:0 --concurrency thread --keep-alive 0
    SH_PID=$SERVER_PID SH_ADDR=$SERVER_ADDR
    start_server tokio "${PRIO[@]}" taskset -c $SERVER_CPU "$RELEASE/echo-baseline" --bind 127.0.0.1:0
    BL_PID=$SERVER_PID BL_ADDR=$SERVER_ADDR
    for size in 64 16384; do
        for conns in 1 50 500; do
            for side in sockhost tokio; do
                if [[ $side == sockhost ]]; then pid=$SH_PID addr=$SH_ADDR; else pid=$BL_PID addr=$BL_ADDR; fi
                count "echo $side, ${size}B x $conns" "$pid" "$RELEASE/loadgen" echo --addr "$addr" \
                    --connections $conns --size $size --duration "$SECS" --warmup 0 --json
            done
        done
    done
    stop_server "$SH_PID"
    stop_server "$BL_PID"
fi
