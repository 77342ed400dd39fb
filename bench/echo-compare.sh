#!/usr/bin/env bash
# Echo throughput: sockhost (thread mode + libecho.so) against echo-baseline, the plain
# tokio echo server. It exists to show what the host and the plugin boundary cost per
# message relative to "just tokio", on the same single-threaded footing.
#
# Both servers run pinned to CPU 0 and loadgen to CPU 1. For each configuration the two
# servers are measured alternately (sockhost, baseline, sockhost, ...) REPS times, each
# run WARMUP + DURATION seconds, and the medians are compared. With both sides on one core
# each, a ratio near 1 can also mean the client was the bottleneck: the detail table shows
# server CPU per message, loadgen's CPU use, and any CPU used by other processes meanwhile
# (a busy machine makes the numbers noisy).
#
# Usage: bench/echo-compare.sh
# Environment: CONNS ("1 100"), SIZE (64), DEPTH (1), DURATION (5), WARMUP (1), REPS (3),
#              NO_BUILD=1 to skip the build.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

CONNS=${CONNS:-"1 100"}
SIZE=${SIZE:-64}
DEPTH=${DEPTH:-1}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
REPS=${REPS:-3}
SERVER_CPU=0
CLIENT_CPU=1

ulimit -n 20000 2>/dev/null || true
command -v taskset >/dev/null || die "taskset (util-linux) is needed"
[[ ${NO_BUILD:-} == 1 ]] || build_release
HZ=$(getconf CLK_TCK)

start_server sockhost taskset -c $SERVER_CPU "$RELEASE/sockhost" --plugin "$RELEASE/libecho.so" \
    --bind 127.0.0.1:0 --concurrency thread --keep-alive 0
SH_PID=$SERVER_PID SH_ADDR=$SERVER_ADDR
start_server echo-baseline taskset -c $SERVER_CPU "$RELEASE/echo-baseline" --bind 127.0.0.1:0
BL_PID=$SERVER_PID BL_ADDR=$SERVER_ADDR
echo "# sockhost on $SH_ADDR (pid $SH_PID), echo-baseline on $BL_ADDR (pid $BL_PID)," \
    "servers on CPU $SERVER_CPU, loadgen on CPU $CLIENT_CPU" >&2

FAILED=0
NOISY=0
RUNS=0
SUMMARY=()
DETAIL=()

# Per server (sockhost / baseline) of the current configuration: space-separated values
# of each run.
declare -A RATE P50 P99 USPM CLIENT OTHER

# run NAME PID ADDR CONNS: one loadgen run; appends its figures to RATE[NAME] etc.
run() {
    local name=$1 pid=$2 addr=$3 conns=$4
    local c0 c1 b0 b1 out
    c0=$(cpu_ticks "$pid")
    b0=$(busy_ticks)
    if ! out=$(taskset -c $CLIENT_CPU "$RELEASE/loadgen" echo --addr "$addr" --connections "$conns" \
        --size "$SIZE" --depth "$DEPTH" --duration "$DURATION" --warmup "$WARMUP" --json); then
        echo "# $name: loadgen reported errors: $out" >&2
        FAILED=1
    fi
    c1=$(cpu_ticks "$pid")
    b1=$(busy_ticks)
    local rate p50 p99 client msgs
    rate=$(json_get msgs_per_sec "$out")
    msgs=$(json_get msgs "$out")
    p50=$(json_get p50_us "$out")
    p99=$(json_get p99_us "$out")
    client=$(json_get client_cpu "$out")
    # Server CPU over the whole run (warm-up included) per message of the whole run,
    # estimated from the measured rate; "other" = machine CPU not used by server or client.
    local total_s span
    span=$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { print d + w }')
    total_s=$(awk -v t=$((c1 - c0)) -v hz="$HZ" 'BEGIN { print t / hz }')
    local us_per_msg server_pct other_pct
    us_per_msg=$(awk -v s="$total_s" -v r="$rate" -v span="$span" \
        'BEGIN { if (r > 0) printf "%.2f", s * 1e6 / (r * span); else print "nan" }')
    server_pct=$(awk -v s="$total_s" -v span="$span" 'BEGIN { printf "%.0f", 100 * s / span }')
    other_pct=$(awk -v b=$((b1 - b0)) -v hz="$HZ" -v s="$total_s" -v c="$client" -v span="$span" \
        'BEGIN { o = 100 * (b / hz - s) / span - 100 * (c == "null" ? 0 : c); if (o < 0) o = 0; printf "%.0f", o }')
    echo "# conns=$conns $name: $rate msgs/s ($msgs msgs), p50 ${p50}us p99 ${p99}us," \
        "server ${server_pct}% cpu ${us_per_msg}us/msg, loadgen cpu $client, other ${other_pct}%" >&2
    RATE[$name]+=" $rate"
    P50[$name]+=" $p50"
    P99[$name]+=" $p99"
    USPM[$name]+=" $us_per_msg"
    CLIENT[$name]+=" $client"
    OTHER[$name]+=" $other_pct"
    if ((other_pct > 10)); then
        NOISY=$((NOISY + 1))
    fi
    RUNS=$((RUNS + 1))
}

for conns in $CONNS; do
    RATE=() P50=() P99=() USPM=() CLIENT=() OTHER=()
    for ((rep = 1; rep <= REPS; rep++)); do
        run sockhost "$SH_PID" "$SH_ADDR" "$conns"
        run baseline "$BL_PID" "$BL_ADDR" "$conns"
    done
    config="conns=$conns size=$SIZE depth=$DEPTH"
    # shellcheck disable=SC2086 # the lists are meant to be split
    {
        sh=$(median ${RATE[sockhost]})
        bl=$(median ${RATE[baseline]})
        ratio=$(awk -v a="$sh" -v b="$bl" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "nan" }')
        SUMMARY+=("$(printf '%-28s %18.0f %18.0f %8s' "$config" "$sh" "$bl" "$ratio")")
        for s in sockhost baseline; do
            DETAIL+=("$(printf '%-28s %-9s %10s %10s %12s %8s %7s' "$config" "$s" \
                "$(median ${P50[$s]})" "$(median ${P99[$s]})" "$(median ${USPM[$s]})" \
                "$(median ${CLIENT[$s]})" "$(median ${OTHER[$s]})")")
        done
    }
done

stop_server "$SH_PID"
stop_server "$BL_PID"

echo
echo "Echo throughput, ${SIZE}-byte messages, depth $DEPTH, ${DURATION}s after ${WARMUP}s warm-up," \
    "median of $REPS (server on CPU $SERVER_CPU, loadgen on CPU $CLIENT_CPU)"
printf '%-28s %18s %18s %8s\n' config "sockhost msgs/s" "baseline msgs/s" ratio
printf '%s\n' "${SUMMARY[@]}"
echo
echo "Details (medians): round-trip latency, server CPU per message, loadgen CPU (1.0 = one"
echo "core: client-bound), CPU used by other processes during the run (% of one core)"
printf '%-28s %-9s %10s %10s %12s %8s %7s\n' config server p50_us p99_us srv_us/msg client other%
printf '%s\n' "${DETAIL[@]}"
if ((NOISY > 0)); then
    echo
    echo "WARNING: in $NOISY of $RUNS runs other processes used more than 10% of a core;" \
        "those figures are noisy: rerun on an idle machine."
fi
if ((FAILED)); then
    echo
    echo "FAILED: some loadgen run reported errors or mismatches (see stderr)."
fi
exit "$FAILED"
