# shellcheck shell=bash
# Helpers shared by the bench/*.sh scripts: build, start a server and wait for its
# `listening on` line, read its memory and CPU, and stop everything this script started
# (by PID, on any exit).
#
# Source it from a script that has `set -euo pipefail` and has cd'ed to the workspace root.

BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/sockhost-bench.XXXXXX")
BENCH_PIDS=()
RELEASE=target/release

bench_cleanup() {
    local pid
    for pid in "${BENCH_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${BENCH_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$BENCH_TMP"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "error: $*" >&2
    exit 1
}

# Build the release binaries. The whole workspace is tried first (sockhost + libecho +
# the bench tools); if that fails (e.g. someone is mid-edit in host/), only the bench
# crate is built and the sockhost binaries already in target/release are used.
build_release() {
    echo "# building (cargo build --release)" >&2
    if ! cargo build --release --quiet 2>"$BENCH_TMP/build.log"; then
        echo "# workspace build failed; building only sockhost-bench and using the existing" \
            "$RELEASE/sockhost and $RELEASE/libecho.so (see below)" >&2
        tail -n 5 "$BENCH_TMP/build.log" >&2
        cargo build --release --quiet -p sockhost-bench || die "building sockhost-bench failed"
    fi
    local f
    for f in sockhost libecho.so echo-baseline loadgen; do
        [[ -x $RELEASE/$f || -f $RELEASE/$f ]] || die "$RELEASE/$f is missing"
    done
}

# start_server NAME CMD...: run CMD in the background (stdout/stderr to files), wait for
# its `listening on tcp://ADDR` line, and set SERVER_PID and SERVER_ADDR.
start_server() {
    local name=$1
    shift
    local out="$BENCH_TMP/$name.out" err="$BENCH_TMP/$name.err"
    "$@" >"$out" 2>"$err" &
    SERVER_PID=$!
    BENCH_PIDS+=("$SERVER_PID")
    local i
    for ((i = 0; i < 100; i++)); do
        SERVER_ADDR=$(sed -n 's|^listening on tcp://||p' "$out" | head -n 1)
        [[ -n $SERVER_ADDR ]] && return 0
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            cat "$err" >&2
            die "$name exited before listening"
        fi
        sleep 0.1
    done
    cat "$err" >&2
    die "$name did not print 'listening on' within 10 s"
}

# stop_server PID: SIGTERM, wait up to 10 s, then SIGKILL.
stop_server() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# rss_kb PID: resident set size in KiB (VmRSS).
rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# cpu_ticks PID: user + system CPU time of the whole process, in clock ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# busy_ticks: non-idle CPU time of the whole machine, in clock ticks (all CPUs).
busy_ticks() {
    awk 'NR == 1 { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# established PORT: how many established TCP connections have local port PORT.
established() {
    ss -Htn state established "( sport = :$1 )" 2>/dev/null | wc -l
}

# json_get KEY JSON: the raw value of a top-level number field of loadgen's --json line.
json_get() {
    sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" <<<"$2"
}

# median VALUES...: the median (the mean of the middle two for an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
