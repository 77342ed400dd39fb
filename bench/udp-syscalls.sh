#!/usr/bin/env bash
# System calls per datagram of sockhost's UDP server under the bench's UDP load, counted by
# the kernel's syscall tracepoints (`perf stat`), so the server runs at full speed (strace
# would slow it down and so make its batches larger than under the real load).
#
#   bench/udp-syscalls.sh [SIZE...]           # default: 64 1400
#   RELEASE=/other/target/release bench/udp-syscalls.sh 1400
#
# sockhost (thread mode, libecho.so, one UDP bind) on CPU 0 and loadgen (4 sockets x 16
# datagrams in flight, 2 s) on CPU 1, both at real-time priority when root, as bench/run.sh
# runs them. Prints per datagram: recvfrom, sendto, recvmmsg, sendmmsg, epoll_wait, total.
set -euo pipefail
cd "$(dirname "$0")/.."
RELEASE=${RELEASE:-$PWD/target/release}
SIZES=("$@")
[[ ${#SIZES[@]} -gt 0 ]] || SIZES=(64 1400)
command -v perf >/dev/null || { echo "error: perf is not installed (Debian: linux-perf)" >&2; exit 1; }
PRIO=()
[[ $(id -u) == 0 ]] && PRIO=(chrt -r 1)
work=$(mktemp -d)
trap 'kill "${SPID:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
EVENTS=syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_recvmmsg,syscalls:sys_enter_sendmmsg,syscalls:sys_enter_epoll_wait
for size in "${SIZES[@]}"; do
    "${PRIO[@]}" taskset -c 0 "$RELEASE/sockhost" --plugin "$RELEASE/libecho.so" \
        --bind udp://127.0.0.1:0 --concurrency thread >"$work/stdout" 2>"$work/stderr" &
    SPID=$!
    for _ in $(seq 100); do grep -q "listening on" "$work/stdout" && break; sleep 0.05; done
    addr=$(grep -o 'udp://[0-9.:]*' "$work/stdout" | head -1 | sed 's#udp://##')
    [[ -n $addr ]] || { echo "error: sockhost did not start: $(cat "$work/stderr")" >&2; exit 1; }
    "${PRIO[@]}" perf stat -x, -e "$EVENTS" -p "$SPID" -o "$work/perf" &
    PERF=$!
    sleep 0.3
    "${PRIO[@]}" taskset -c 1 "$RELEASE/loadgen" udp --addr "$addr" --sockets 4 --depth 16 \
        --size "$size" --duration 2 --warmup 0 --json >"$work/load"
    kill -INT "$PERF"; wait "$PERF" || true
    kill "$SPID"; wait "$SPID" 2>/dev/null || true
    n=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['datagrams'])" "$work/load")
    echo "UDP echo ${size} B: $n datagrams answered"
    awk -F, -v n="$n" '/syscalls/ { split($3, a, "sys_enter_"); printf "  %-11s %9d  %.3f per datagram\n", a[2], $1, $1 / n; t += $1 }
        END { printf "  %-11s %9d  %.3f per datagram\n", "total", t, t / n }' "$work/perf"
done
