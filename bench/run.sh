#!/usr/bin/env bash
# The benchmark suite of issue 7: sockhost against what a user would pick instead, in one
# table of figures and ratios, each figure the median of REPS runs.
#
#   echo         sockhost --concurrency thread + libecho  vs  echo-baseline (plain tokio)
#   connect      the same pair, one connection per round trip
#   HTTP         sockhost + libhello                      vs  nginx `return 200`  (wrk)
#   idle memory  sockhost + libhello, plain and TLS       vs  nginx, 10,000 keep-alive connections,
#                and the most the fd limit allows (a worker and two client processes per CPU)
#   UDP          sockhost + libecho over UDP              vs  udp-baseline (plain tokio)
#   TLS          handshakes/s and HTTPS requests/s        vs  nginx, the same ECDSA P-256 cert;
#                echo bulk over TLS                       vs  echo-baseline over tokio-rustls
#   services     plugin timers (set+cancel ns, bytes per armed timer) and a wake from a plugin
#                thread (latency p50/p99), through servicekit  vs  services-baseline (tokio's
#                own timer wheel and an unbounded channel, in a plain tokio program)
#   fanout       one publisher, 1,000 subscribers, 64-byte messages, deliveries/s:
#                sockhost + libchat  vs  redis-server PUBLISH/SUBSCRIBE (Debian's), and vs
#                fanout-baseline (plain tokio, the same line protocol as chat)
#   proxy        sockhost + libproxy (thread mode)        vs  HAProxy `mode tcp` and nginx
#                `stream { proxy_pass }`, one worker each: wrk -c50/-c500 to nginx `return
#                200`, connect rate (a new upstream connection per request), 64 KiB echo bulk
#   redis        sockhost + libredis (thread mode)        vs  redis-server (save "", appendonly
#                no, one I/O thread): redis-benchmark -c 50 -t set,get,incr,lpush,lpop, -P 1
#                and -P 16; requests/s over the five tests, and server CPU per request
#   scaling      sockhost --workers W + libhello           vs  nginx worker_processes W, for
#                W = 1, 2, 4, ... up to half the machine's CPUs (and 2 always): wrk req/s,
#                CPU per request, and the spread of connections over the workers
#   (tls also:   resumed handshakes vs nginx, and server CPU per handshake vs the crypto
#                floor: one ECDSA P-256 signature + one X25519 exchange, timed in the run)
#
# Method: single-worker servers run pinned to CPU $SERVER_CPU and the load generator
# (loadgen, or wrk with one thread) to CPU $CLIENT_CPU, both at real-time priority when
# allowed (BENCH_PRIO in lib.sh: other processes then barely disturb them); the two servers
# of a pair are measured back to back (A, B, A, B, ...) so that drift hits both alike.
# The 2-worker HTTP rows cannot be pinned apart on a 2-core machine: servers and wrk share
# both cores there, and the output says so. For every run the server's CPU time (all its
# processes) is read from /proc, so each row also shows server CPU per operation: where
# the client, not the server, is the bottleneck (client CPU near 100%, server below), that
# is the figure that compares the servers' cost.
#
# Usage: bench/run.sh          (from anywhere; about 8 minutes on 2 cores)
# Environment: REPS (3), DURATION seconds per loadgen run (2), WARMUP (0.5), WRK_DURATION
#              (3), CONNS idle connections (10000), IDLE_MAX_PER_WORKER (18000) idle
#              connections per worker in the largest idle run, NO_BUILD=1 to skip the build,
#              PROXY_WRK_DURATION (2) for the proxy rows,
#              REDIS_N (100000) and REDIS_N_PIPELINED (1000000) requests per redis-benchmark
#              test at -P 1 and -P 16,
#              ONLY="echo connect http idle udp tls services fanout proxy redis scaling" to run some
#              sections, QUIET_WAIT (30): seconds in all to wait for other processes (a build)
#              to go quiet, FANOUT_MESSAGES (10000) messages per fan-out run,
#              SCALE_CONNS_PER_WORKER (50) wrk connections per worker in the scaling rows.
# Installs nginx, wrk, redis-server, redis-tools (and openssl, haproxy, libnginx-mod-stream,
# if missing) from Debian's packages.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

REPS=${REPS:-3}
DURATION=${DURATION:-2}
WARMUP=${WARMUP:-0.5}
WRK_DURATION=${WRK_DURATION:-3}
CONNS=${CONNS:-10000}
IDLE_MAX_PER_WORKER=${IDLE_MAX_PER_WORKER:-18000}
HOLD=${HOLD:-4}
SETTLE=${SETTLE:-1}
PROXY_WRK_DURATION=${PROXY_WRK_DURATION:-2}
REDIS_N=${REDIS_N:-100000}
REDIS_N_PIPELINED=${REDIS_N_PIPELINED:-1000000}
ONLY=${ONLY:-"echo connect http idle udp tls services fanout proxy redis scaling"}
FANOUT_MESSAGES=${FANOUT_MESSAGES:-10000}
SERVER_CPU=0
CLIENT_CPU=1
STARTED=$(date +%s)

ulimit -n 20000 || die "cannot raise the fd limit to 20000 (ulimit -Hn is $(ulimit -Hn))"
command -v taskset >/dev/null || die "taskset (util-linux) is needed"
command -v ss >/dev/null || die "ss (iproute2) is needed"
ensure_packages nginx=nginx wrk=wrk openssl=openssl
[[ ${NO_BUILD:-} == 1 ]] || build_release
HZ=$(getconf CLK_TCK)
SPAN=$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { print d + w }')

ROWS=()
NOTES=()
FAILED=0
NOISY=0
RUNS=0
QUIET_LEFT=${QUIET_WAIT:-30}

section() {
    [[ " $ONLY " == *" $1 "* ]]
}

# ratio A B: A / B to 3 decimals ("nan" when B is 0).
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "nan" }'
}

# row FIGURE UNIT SOCKHOST BASELINE_NAME BASELINE RATIO TARGET MET CPU_RATIO DETAIL: one
# table row.
row() {
    ROWS+=("$(printf '%-34s %-8s %10s  %-12s %10s %6s  %-6s %-4s %7s  %s' "$@")")
}

# verdict RATIO TARGET: "yes"/"NO" for a target like ">=0.97" or "<=1.0", "-" for none.
verdict() {
    local r=$1 t=$2
    case $t in
    ">="*) awk -v r="$r" -v t="${t#>=}" 'BEGIN { print (r >= t) ? "yes" : "NO" }' ;;
    "<="*) awk -v r="$r" -v t="${t#<=}" 'BEGIN { print (r <= t) ? "yes" : "NO" }' ;;
    *) echo "-" ;;
    esac
}

# measured_run ROOT_PID CPUS OUTFILE CMD...: run CMD pinned to CPUS with its stdout in
# OUTFILE; sets RUN_TICKS (CPU ticks used by ROOT_PID and its children meanwhile),
# RUN_CLIENT (the command's own CPU use, % of one core) and RUN_OK.
measured_run() {
    local root=$1 cpus=$2 out=$3
    shift 3
    local t0 t1 b0 b1 w0 w1 timing="$BENCH_TMP/time"
    t0=$(tree_ticks "$root")
    b0=$(busy_ticks)
    w0=$(date +%s%N)
    RUN_OK=1
    # bash's `time` reports the command's (user + sys) / real as %P.
    { TIMEFORMAT=%P && time "${PRIO[@]}" taskset -c "$cpus" "$@" >"$out" 2>>"$BENCH_TMP/client.err"; } \
        2>"$timing" || RUN_OK=0
    w1=$(date +%s%N)
    b1=$(busy_ticks)
    t1=$(tree_ticks "$root")
    RUN_TICKS=$((t1 - t0))
    RUN_CLIENT=$(tail -n 1 "$timing" | awk '{ printf "%.0f", $1 }')
    # CPU used meanwhile by neither the server nor the client (% of one core): another
    # process competing for the cores makes the run noisy.
    RUN_OTHER=$(awk -v b=$((b1 - b0)) -v t="$RUN_TICKS" -v hz="$HZ" -v c="$RUN_CLIENT" \
        -v w=$((w1 - w0)) 'BEGIN { o = 100 * (b - t) / hz / (w / 1e9) - c; if (o < 0) o = 0; printf "%.0f", o }')
    if ((RUN_OTHER > 15)); then
        NOISY=$((NOISY + 1))
    fi
    RUNS=$((RUNS + 1))
}

# wait_quiet: before a measurement, wait (at most QUIET_WAIT seconds over the whole run)
# until other processes use less than 10% of a core, e.g. a build finishing.
wait_quiet() {
    local b0 b1 busy
    while ((QUIET_LEFT > 0)); do
        b0=$(busy_ticks)
        sleep 1
        b1=$(busy_ticks)
        busy=$(((b1 - b0) * 100 / HZ))
        ((busy < 10)) && return 0
        QUIET_LEFT=$((QUIET_LEFT - 1))
        echo "# machine busy (${busy}% of a core used by others); waiting" >&2
    done
}

# pair FIGURE UNIT TARGET PARSER SPAN CLIENT_CPUS \
#      A_NAME A_PID A_ADDR B_NAME B_PID B_ADDR [C_NAME C_PID C_ADDR ...] -- CMD...
# Measure CMD (in which @ADDR@ stands for the server's address) against A and the others,
# back to back (A, B, [C,] A, B, ...), REPS times; add a row with the medians of A against
# each other server. PARSER is `json:FIELD` (a loadgen --json field) or `wrk`
# (Requests/sec). SPAN: seconds of load per run, for CPU per operation, or `json:FIELD` for
# a run whose length the load generator reports (a fixed amount of work).
# Afterwards PAIR_RATE_A / PAIR_US_A hold A's median rate and server CPU per operation (µs),
# PAIR_RATE_B / PAIR_US_B the last other server's.
pair() {
    local figure=$1 unit=$2 target=$3 parser=$4 span=$5 cpus=$6
    shift 6
    local -a names=() pids=() addrs=() other=()
    while [[ $1 != -- ]]; do
        names+=("$1") pids+=("$2") addrs+=("$3")
        shift 3
    done
    shift
    # Per server: the runs' figures, space-separated.
    local -A rates=() uss=() cls=() svs=()
    local rep side out rate us srv cmd run_span
    wait_quiet
    for ((rep = 1; rep <= REPS; rep++)); do
        for side in "${!names[@]}"; do
            out="$BENCH_TMP/run.out.$side"
            cmd=("${@//@ADDR@/${addrs[$side]}}")
            measured_run "${pids[$side]}" "$cpus" "$out" "${cmd[@]}"
            case $parser in
            json:*)
                rate=$(json_get "${parser#json:}" "$(tail -n 1 "$out")")
                ;;
            wrk)
                rate=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
                if grep -qE 'Non-2xx|Socket errors' "$out"; then
                    echo "# $figure, ${names[$side]}: wrk saw errors:" >&2
                    grep -E 'Non-2xx|Socket errors' "$out" >&2
                    RUN_OK=0
                fi
                ;;
            esac
            rate=${rate:-0}
            run_span=$span
            if [[ $span == json:* ]]; then
                run_span=$(json_get "${span#json:}" "$(tail -n 1 "$out")")
                run_span=${run_span:-0}
            fi
            if ((!RUN_OK)); then
                echo "# $figure, ${names[$side]}: the load generator reported a failure:" >&2
                cat "$out" >&2
                tail -n 5 "$BENCH_TMP/client.err" >&2
                FAILED=1
            fi
            srv=$(awk -v t="$RUN_TICKS" -v hz="$HZ" -v s="$run_span" \
                'BEGIN { if (s > 0) printf "%.0f", 100 * t / hz / s; else print "nan" }')
            us=$(awk -v t="$RUN_TICKS" -v hz="$HZ" -v r="$rate" -v s="$run_span" \
                'BEGIN { if (r > 0 && s > 0) printf "%.2f", t / hz * 1e6 / (r * s); else print "nan" }')
            echo "# $figure: ${names[$side]} $rate $unit, server ${srv}% cpu ${us} us/op," \
                "client ${RUN_CLIENT}%, others ${RUN_OTHER}%" >&2
            other+=("$RUN_OTHER")
            rates[$side]+="$rate " uss[$side]+="$us " cls[$side]+="$RUN_CLIENT " svs[$side]+="$srv "
        done
    done
    local ma mb r detail ua ub
    # shellcheck disable=SC2086 # one number per word
    ma=$(median ${rates[0]})
    # shellcheck disable=SC2086
    ua=$(median ${uss[0]})
    for ((side = 1; side < ${#names[@]}; side++)); do
        # shellcheck disable=SC2086
        mb=$(median ${rates[$side]})
        # shellcheck disable=SC2086
        ub=$(median ${uss[$side]})
        r=$(ratio "$ma" "$mb")
        # shellcheck disable=SC2086
        detail=$(printf 'srv us/op %s/%s  srv cpu %s/%s%%  client cpu %s/%s%%  others %s%%' \
            "$ua" "$ub" "$(median ${svs[0]})" "$(median ${svs[$side]})" \
            "$(median ${cls[0]})" "$(median ${cls[$side]})" "$(median "${other[@]}")")
        row "$figure" "$unit" "$(printf '%.0f' "$ma")" "${names[$side]}" "$(printf '%.0f' "$mb")" \
            "$r" "$target" "$(verdict "$r" "$target")" "$(ratio "$ub" "$ua")" "$detail"
        PAIR_RATE_B=$mb PAIR_US_B=$ub
    done
    PAIR_RATE_A=$ma PAIR_US_A=$ua
}

# sockhost ARGS...: the sockhost command line with the given arguments.
SOCKHOST="$RELEASE/sockhost"

echo "# $(nproc) CPUs; servers on CPU $SERVER_CPU, load generators on CPU $CLIENT_CPU;" \
    "median of $REPS runs of ${DURATION}s (+${WARMUP}s warm-up; wrk ${WRK_DURATION}s)" >&2

# --- echo and connect rate: sockhost thread mode + libecho vs plain tokio -----------------
if section echo || section connect; then
    start_server sockhost-echo "${PRIO[@]}" taskset -c $SERVER_CPU "$SOCKHOST" --plugin "$RELEASE/libecho.so" \
        --bind 127.0.0.1:0 --concurrency thread --keep-alive 0
    SH_PID=$SERVER_PID SH_ADDR=$SERVER_ADDR
    start_server echo-baseline "${PRIO[@]}" taskset -c $SERVER_CPU "$RELEASE/echo-baseline" --bind 127.0.0.1:0
    BL_PID=$SERVER_PID BL_ADDR=$SERVER_ADDR
    if section echo; then
        for size in 64 16384; do
            for conns in 1 50 500; do
                label="echo ${size}B, $conns conn"
                ((conns > 1)) && label+="s"
                pair "$label" msgs/s ">=0.97" json:msgs_per_sec "$SPAN" $CLIENT_CPU \
                    sockhost "$SH_PID" "$SH_ADDR" tokio "$BL_PID" "$BL_ADDR" -- \
                    "$RELEASE/loadgen" echo --addr @ADDR@ --connections "$conns" --size "$size" \
                    --duration "$DURATION" --warmup "$WARMUP" --json
            done
        done
    fi
    if section connect; then
        pair "connect rate, 16 loops" conns/s ">=1.0" json:conns_per_sec "$SPAN" $CLIENT_CPU \
            sockhost "$SH_PID" "$SH_ADDR" tokio "$BL_PID" "$BL_ADDR" -- \
            "$RELEASE/loadgen" connect --addr @ADDR@ --concurrency 16 \
            --duration "$DURATION" --warmup "$WARMUP" --json
    fi
    stop_server "$SH_PID"
    stop_server "$BL_PID"
fi

# --- HTTP: sockhost + libhello vs nginx `return 200` (wrk, keep-alive) --------------------
# check_http NAME URL [curl flags]: one request by curl; note the response's size.
check_http() {
    local name=$1 url=$2
    shift 2
    local got
    got=$(curl --silent --show-error --max-time 5 "$@" -o "$BENCH_TMP/body" \
        -w '%{http_code} %{size_header}+%{size_download}' "$url") ||
        die "$name: curl $url failed"
    [[ $got == 200\ * && $(cat "$BENCH_TMP/body") == "Hello, world!" ]] ||
        die "$name: $url answered $got $(head -c 100 "$BENCH_TMP/body")"
    echo "${got#200 }"
}

if section http; then
    command -v curl >/dev/null || ensure_packages curl=curl
    start_server sockhost-hello "${PRIO[@]}" taskset -c $SERVER_CPU "$SOCKHOST" --plugin "$RELEASE/libhello.so" \
        --bind 127.0.0.1:0 --concurrency thread --keep-alive 0
    SH_PID=$SERVER_PID SH_ADDR=$SERVER_ADDR
    start_nginx nginx-http1 1 $SERVER_CPU
    NOTES+=("HTTP response bytes (head+body): sockhost $(check_http sockhost "http://$SH_ADDR/"), nginx $(check_http nginx "http://$NGINX_ADDR/")")
    for c in 50 500; do
        pair "HTTP hello, 1 worker, wrk -c$c" req/s ">=1.2" wrk "$WRK_DURATION" $CLIENT_CPU \
            sockhost "$SH_PID" "$SH_ADDR" nginx "$NGINX_PID" "$NGINX_ADDR" -- \
            wrk -t1 -c"$c" -d"$WRK_DURATION"s "http://@ADDR@/"
    done
    stop_server "$SH_PID"
    stop_server "$NGINX_PID"

    start_server sockhost-hello2 "${PRIO[@]}" "$SOCKHOST" --plugin "$RELEASE/libhello.so" \
        --bind 127.0.0.1:0 --workers 2 --keep-alive 0
    SH_PID=$SERVER_PID SH_ADDR=$SERVER_ADDR
    start_nginx nginx-http2 2 "$ALL_CPUS"
    for c in 50 500; do
        pair "HTTP hello, 2 workers*, wrk -c$c" req/s ">=1.2" wrk "$WRK_DURATION" "$ALL_CPUS" \
            sockhost "$SH_PID" "$SH_ADDR" nginx "$NGINX_PID" "$NGINX_ADDR" -- \
            wrk -t1 -c"$c" -d"$WRK_DURATION"s "http://@ADDR@/"
    done
    NOTES+=("* 2 workers on $(nproc) cores: the two server workers and wrk share both cores (nothing is pinned), so wrk takes CPU from the servers and throughput understates both; compare cpu/op.")
    stop_server "$SH_PID"
    stop_server "$NGINX_PID"
fi

# One idle-memory row: KIND (plain|TLS), what was held, sockhost's and nginx's bytes per
# connection, a note. Targets (issue 17): plain at most 512 B and below nginx; TLS at most
# half nginx's.
idle_row() {
    local kind=$1 held=$2 sh=$3 ng=$4 note=$5 r target
    r=$(ratio "$sh" "$ng")
    if [[ $kind == TLS ]]; then
        row "idle memory TLS, $held" B/conn "$sh" nginx "$ng" "$r" "<=0.5" \
            "$(verdict "$r" "<=0.5")" "-" "$note"
    else
        target=$(awk -v s="$sh" -v r="$r" 'BEGIN { print (s <= 512 && r <= 1) ? "yes" : "NO" }')
        row "idle memory, $held" B/conn "$sh" nginx "$ng" "$r" "<=512B" "$target" "-" "$note"
    fi
}

# --- idle memory: keep-alive HTTP connections after one request each, plain and TLS -------
# CONNS connections to one single-threaded server of each (REPS runs, median); then the most
# this machine's fd limit allows (20,000 per process): one worker process per CPU with
# IDLE_MAX_PER_WORKER connections each, from two client processes per worker, each to its
# own listening port (one destination has ~28,000 ephemeral ports), one run each.
if section idle; then
    make_cert
    idle_rows() {
        local kind=$1 sh ng r target
        local -a srv_tls=() ngx_tls=() lg_tls=() sh_runs=() ng_runs=()
        if [[ $kind == TLS ]]; then
            srv_tls=(--cert-file "$CERT" --key-file "$KEY")
            ngx_tls=("$CERT" "$KEY")
            lg_tls=(--tls)
        fi
        for ((rep = 1; rep <= REPS; rep++)); do
            start_server "sockhost-idle-$kind$rep" "${PRIO[@]}" "$SOCKHOST" --plugin "$RELEASE/libhello.so" \
                --bind 127.0.0.1:0 --concurrency thread --keep-alive 0 \
                --max-connections $((CONNS + 100)) "${srv_tls[@]}"
            measure_idle "sockhost-idle-$kind$rep" "$SERVER_PID" "$SERVER_ADDR" --probe http "${lg_tls[@]}"
            ((IDLE_OK)) || FAILED=1
            sh_runs+=("$IDLE_PER_CONN")
            stop_server "$SERVER_PID"
            start_nginx "nginx-idle-$kind$rep" 1 "$ALL_CPUS" "${ngx_tls[@]}"
            measure_idle "nginx-idle-$kind$rep" "$NGINX_WORKER" "$NGINX_ADDR" --probe http "${lg_tls[@]}"
            ((IDLE_OK)) || FAILED=1
            ng_runs+=("$IDLE_PER_CONN")
            stop_server "$NGINX_PID"
        done
        sh=$(median "${sh_runs[@]}")
        ng=$(median "${ng_runs[@]}")
        if [[ $kind == TLS ]]; then
            idle_row TLS "$CONNS conns" "$sh" "$ng" "RSS growth per connection after a handshake and one GET; runs: ${sh_runs[*]} / ${ng_runs[*]}"
        else
            idle_row plain "$CONNS conns" "$sh" "$ng" "RSS growth per keep-alive connection after one GET; runs: ${sh_runs[*]} / ${ng_runs[*]}"
        fi

        # The most the fd limit allows: one worker per CPU; two client processes per worker,
        # each to its own port (fewer connections per destination: connect()'s search for a
        # free ephemeral port slows down as a destination's ports fill up).
        local workers per ports=() binds=() addrs=() p total clients
        workers=$(nproc)
        clients=$((2 * workers))
        per=$((IDLE_MAX_PER_WORKER / 2))
        total=$((clients * per))
        for ((p = 0; p < clients; p++)); do
            ports+=("$(free_port)")
            binds+=(--bind "127.0.0.1:${ports[p]}")
            addrs+=("127.0.0.1:${ports[p]}")
        done
        start_server "sockhost-idlemax-$kind" "${PRIO[@]}" "$SOCKHOST" --plugin "$RELEASE/libhello.so" \
            "${binds[@]}" --workers "$workers" --keep-alive 0 --max-connections 19900 "${srv_tls[@]}"
        measure_idle_many "sockhost-idlemax-$kind" "$SERVER_PID" "$per" "${addrs[@]}" -- \
            --probe http "${lg_tls[@]}"
        ((IDLE_OK)) || FAILED=1
        sh=$IDLE_PER_CONN
        stop_server "$SERVER_PID"
        # nginx on the same ports (free again), its first one as its main port.
        NGINX_EXTRA_PORTS="${ports[*]:1}" start_nginx_on "${ports[0]}" "nginx-idlemax-$kind" "$workers" \
            "$ALL_CPUS" "${ngx_tls[@]}"
        measure_idle_many "nginx-idlemax-$kind" "$NGINX_PID" "$per" "${addrs[@]}" -- \
            --probe http "${lg_tls[@]}"
        ((IDLE_OK)) || FAILED=1
        ng=$IDLE_PER_CONN
        stop_server "$NGINX_PID"
        idle_row "$kind" "$total conns*" "$sh" "$ng" "$workers workers, $clients client processes x $per; one run"
    }
    idle_rows plain
    idle_rows TLS
    NOTES+=("idle memory: nginx's worker_connections slots (~0.4 KB each, 20000 per worker) are allocated at start-up and so are not in its per-connection growth; sockhost allocates per connection.")
    NOTES+=("idle memory, * rows: $(nproc) worker processes (sockhost --workers, nginx worker_processes) with SO_REUSEPORT, RSS summed over all server processes; the most one process's 20,000 descriptors allow.")
fi

# --- UDP: sockhost + libecho vs plain tokio ------------------------------------------------
if section udp; then
    start_server sockhost-udp "${PRIO[@]}" taskset -c $SERVER_CPU "$SOCKHOST" --plugin "$RELEASE/libecho.so" \
        --bind udp://127.0.0.1:0 --concurrency thread
    SH_PID=$SERVER_PID SH_ADDR=$SERVER_ADDR
    start_server udp-baseline "${PRIO[@]}" taskset -c $SERVER_CPU "$RELEASE/udp-baseline" --bind udp://127.0.0.1:0
    BL_PID=$SERVER_PID BL_ADDR=$SERVER_ADDR
    for size in 64 1400; do
        pair "UDP echo ${size}B, 4 sockets x 16" dgrams/s "-" json:datagrams_per_sec "$SPAN" \
            $CLIENT_CPU sockhost "$SH_PID" "$SH_ADDR" tokio "$BL_PID" "$BL_ADDR" -- \
            "$RELEASE/loadgen" udp --addr @ADDR@ --sockets 4 --depth 16 --size "$size" \
            --duration "$DURATION" --warmup "$WARMUP" --json
    done
    stop_server "$SH_PID"
    stop_server "$BL_PID"
fi

# tls_handshake_rows: after the full-handshake pair (sockhost at $SH_PID/$SH_ADDR, nginx at
# $NGINX_PID/$NGINX_ADDR, both serving $CERT/$KEY over TLS): resumed handshakes against
# nginx, a plain-TCP connection (the same loop without TLS) against nginx, and the full and
# resumed handshakes' server CPU against the crypto floor measured now on the server's CPU
# (crypto-floor: one ECDSA P-256 signature + one X25519 exchange through rustls's aws-lc-rs
# provider, the calls a handshake makes; `openssl speed` for nginx's OpenSSL in a note).
tls_handshake_rows() {
    local full_sh=$PAIR_US_A full_ng=$PAIR_US_B resumed_sh resumed_ng plain_sh plain_ng
    local -a floors=() x25519=() signs=() ring_kx=() ring_signs=()
    local rep out side name conns resumed
    [[ -x $RELEASE/crypto-floor ]] || die "$RELEASE/crypto-floor is missing (cargo build --release -p sockhost-bench)"
    pair "TLS resumed handshakes, 16 loops" conns/s "-" json:conns_per_sec "$SPAN" $CLIENT_CPU \
        sockhost "$SH_PID" "$SH_ADDR" nginx "$NGINX_PID" "$NGINX_ADDR" -- \
        "$RELEASE/loadgen" connect --addr @ADDR@ --concurrency 16 --tls --resume --http \
        --duration "$DURATION" --warmup "$WARMUP" --json
    resumed_sh=$PAIR_US_A resumed_ng=$PAIR_US_B
    # Resumption is proven, not assumed: of the last run's handshakes, how many resumed.
    out="resumed handshakes (of the last run's):"
    for side in 0 1; do
        name=$([[ $side == 0 ]] && echo sockhost || echo nginx)
        conns=$(json_get conns "$(tail -n 1 "$BENCH_TMP/run.out.$side")")
        resumed=$(json_get resumed "$(tail -n 1 "$BENCH_TMP/run.out.$side")")
        out+=" $name ${resumed:-0} of ${conns:-0};"
        if ((${resumed:-0} * 10 < ${conns:-0} * 9)); then
            echo "# $name resumed only ${resumed:-0} of ${conns:-0} handshakes: are tickets on?" >&2
            FAILED=1
        fi
    done
    NOTES+=("$out the client (loadgen --resume) keeps every ticket a server sends and offers one per new connection (TLS 1.3 PSK with an X25519 exchange); sockhost: its own ticketer (host/src/tls/tickets/), 2 tickets per handshake (rustls's default); nginx: ssl_session_tickets on (its default, set explicitly), OpenSSL's default of 2 tickets.")

    # The same connection loop without TLS: what a connection costs before any TLS.
    local plain_sh_pid plain_sh_addr
    start_server sockhost-plain "${PRIO[@]}" taskset -c $SERVER_CPU "$SOCKHOST" \
        --plugin "$RELEASE/libhello.so" --bind 127.0.0.1:0 --concurrency thread --keep-alive 0
    plain_sh_pid=$SERVER_PID plain_sh_addr=$SERVER_ADDR
    local tls_ng_pid=$NGINX_PID tls_ng_addr=$NGINX_ADDR
    start_nginx nginx-plain 1 $SERVER_CPU
    pair "plain TCP + GET (no TLS), 16 loops" conns/s "-" json:conns_per_sec "$SPAN" $CLIENT_CPU \
        sockhost "$plain_sh_pid" "$plain_sh_addr" nginx "$NGINX_PID" "$NGINX_ADDR" -- \
        "$RELEASE/loadgen" connect --addr @ADDR@ --concurrency 16 --http \
        --duration "$DURATION" --warmup "$WARMUP" --json
    plain_sh=$PAIR_US_A plain_ng=$PAIR_US_B
    stop_server "$plain_sh_pid"
    stop_server "$NGINX_PID"
    NGINX_PID=$tls_ng_pid NGINX_ADDR=$tls_ng_addr

    for ((rep = 1; rep <= REPS; rep++)); do
        out=$("${PRIO[@]}" taskset -c $SERVER_CPU "$RELEASE/crypto-floor" --key-file "$KEY" --json) ||
            die "crypto-floor failed"
        floors+=("$(json_get full_floor_us "$out")")
        x25519+=("$(json_get x25519_us "$out")")
        signs+=("$(json_get sign_p256_us "$out")")
        ring_kx+=("$(json_get ring_x25519_us "$out")")
        ring_signs+=("$(json_get ring_sign_p256_us "$out")")
    done
    local floor kx sign tls_only
    floor=$(median "${floors[@]}")
    kx=$(median "${x25519[@]}")
    sign=$(median "${signs[@]}")
    tls_only=$(awk -v a="$full_sh" -v b="$plain_sh" 'BEGIN { printf "%.2f", a - b }')
    row "TLS full hs, srv CPU vs crypto floor" us/hs "$full_sh" "floor" "$floor" \
        "$(ratio "$full_sh" "$floor")" "<=1.5" "$(verdict "$(ratio "$full_sh" "$floor")" "<=1.5")" "-" \
        "floor = ECDSA P-256 sign $sign + X25519 $kx us (aws-lc-rs, CPU $SERVER_CPU); nginx ${full_ng} us/hs"
    row "  the same, less a plain connection" us/hs "$tls_only" "floor" "$floor" \
        "$(ratio "$tls_only" "$floor")" "-" "-" "-" \
        "full hs ${full_sh} - plain TCP + GET ${plain_sh} us (nginx ${full_ng} - ${plain_ng})"
    row "TLS resumed hs, srv CPU vs floor" us/hs "$resumed_sh" "floor" "$kx" \
        "$(ratio "$resumed_sh" "$kx")" "-" "-" "-" \
        "floor = one X25519 exchange; less a plain connection: $(awk -v a="$resumed_sh" -v b="$plain_sh" 'BEGIN { printf "%.2f", a - b }') us; nginx ${resumed_ng} us/hs"
    out=$("${PRIO[@]}" taskset -c $SERVER_CPU openssl speed -seconds 1 -mr ecdsap256 ecdhx25519 2>/dev/null |
        awk -F: '/^\+F4:/ { sign = 1e6 / $4 } /^\+F5:/ { kx = 1e6 / $4 }
            END { printf "ECDSA P-256 sign %.2f us, X25519 derive %.2f us", sign, kx }')
    NOTES+=("crypto floor: crypto-floor (examples/bench) times through rustls's aws-lc-rs provider what a TLS 1.3 server must compute per full handshake: one ECDSA P-256 SHA-256 signature and one X25519 exchange (ephemeral key pair + shared secret); a resumed one needs the exchange only. OpenSSL $(openssl version | awk '{ print $2 }') (nginx's) on the same CPU, openssl speed: $out (the derive alone; its key generation is not timed there). ring 0.17 (rustls's other provider), crypto-floor: ECDSA P-256 sign $(median "${ring_signs[@]}") us, X25519 key pair + secret $(median "${ring_kx[@]}") us (aws-lc-rs: $sign and $kx).")
}

# --- TLS: the same ECDSA P-256 certificate everywhere --------------------------------------
if section tls; then
    command -v curl >/dev/null || ensure_packages curl=curl
    make_cert
    start_server sockhost-https "${PRIO[@]}" taskset -c $SERVER_CPU "$SOCKHOST" --plugin "$RELEASE/libhello.so" \
        --bind 127.0.0.1:0 --concurrency thread --keep-alive 0 --cert-file "$CERT" --key-file "$KEY"
    SH_PID=$SERVER_PID SH_ADDR=$SERVER_ADDR
    start_nginx nginx-https 1 $SERVER_CPU "$CERT" "$KEY"
    # Both serve the certificate correctly (verified), before it goes unverified for speed.
    resolve=(--cacert "$CERT")
    check_http sockhost "https://localhost:${SH_ADDR##*:}/" "${resolve[@]}" \
        --resolve "localhost:${SH_ADDR##*:}:127.0.0.1" >/dev/null
    check_http nginx "https://localhost:$NGINX_PORT/" "${resolve[@]}" \
        --resolve "localhost:$NGINX_PORT:127.0.0.1" >/dev/null
    pair "TLS full handshakes, 16 loops" conns/s ">=2.5" json:conns_per_sec "$SPAN" $CLIENT_CPU \
        sockhost "$SH_PID" "$SH_ADDR" nginx "$NGINX_PID" "$NGINX_ADDR" -- \
        "$RELEASE/loadgen" connect --addr @ADDR@ --concurrency 16 --tls --http \
        --duration "$DURATION" --warmup "$WARMUP" --json
    NOTES+=("TLS handshakes negotiated: sockhost $(json_get tls "$(tail -n 1 "$BENCH_TMP/run.out.0")" | tr -d '"'), nginx $(json_get tls "$(tail -n 1 "$BENCH_TMP/run.out.1")" | tr -d '"'); one GET / per connection, then close_notify; no resumption; the client does not verify the signature (so that it is not the bottleneck).")
    tls_handshake_rows
    pair "HTTPS hello, wrk -c50" req/s "-" wrk "$WRK_DURATION" $CLIENT_CPU \
        sockhost "$SH_PID" "$SH_ADDR" nginx "$NGINX_PID" "$NGINX_ADDR" -- \
        wrk -t1 -c50 -d"$WRK_DURATION"s "https://@ADDR@/"
    stop_server "$SH_PID"
    stop_server "$NGINX_PID"

    start_server sockhost-tls-echo "${PRIO[@]}" taskset -c $SERVER_CPU "$SOCKHOST" --plugin "$RELEASE/libecho.so" \
        --bind 127.0.0.1:0 --concurrency thread --keep-alive 0 --cert-file "$CERT" --key-file "$KEY"
    SH_PID=$SERVER_PID SH_ADDR=$SERVER_ADDR
    start_server tls-baseline "${PRIO[@]}" taskset -c $SERVER_CPU "$RELEASE/echo-baseline" --bind 127.0.0.1:0 \
        --cert-file "$CERT" --key-file "$KEY"
    BL_PID=$SERVER_PID BL_ADDR=$SERVER_ADDR
    pair "TLS echo 16KiB, 10 conns x 4" msgs/s "-" json:msgs_per_sec "$SPAN" $CLIENT_CPU \
        sockhost "$SH_PID" "$SH_ADDR" tokio-rustls "$BL_PID" "$BL_ADDR" -- \
        "$RELEASE/loadgen" echo --addr @ADDR@ --connections 10 --depth 4 --size 16384 --tls \
        --duration "$DURATION" --warmup "$WARMUP" --json
    stop_server "$SH_PID"
    stop_server "$BL_PID"
fi

# --- host services: timers and wakes, sockhost (servicekit) vs plain tokio --------------------
if section services; then
    wait_quiet
    declare -a SC=() SB=() SP50=() SP99=() BC=() BB=() BP50=() BP99=()
    for ((rep = 0; rep < REPS; rep++)); do
        # A fresh server each time: the timer heap keeps its capacity once grown.
        start_server "sockhost-services$rep" "${PRIO[@]}" taskset -c $SERVER_CPU "$SOCKHOST" \
            --plugin "$RELEASE/libservicekit.so" --bind 127.0.0.1:0 --concurrency thread
        SVC_ADDR=$SERVER_ADDR
        out=$(python3 - "$SVC_ADDR" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
f = s.makefile("rb")
s.sendall(b"timerbench 100000\n")
a = f.readline().decode().split()
s.sendall(b"wakebench 5000\n")
b = f.readline().decode().split()
print(a[1], a[3], b[1], b[3])
PY
)
        stop_server "$SERVER_PID"
        read -r c b p50 p99 <<<"$out"
        SC+=("$c") SB+=("$b") SP50+=("$p50") SP99+=("$p99")
        base=$("${PRIO[@]}" taskset -c $SERVER_CPU "$RELEASE/services-baseline" 100000 5000)
        read -r _ c _ b <<<"$(sed -n 1p <<<"$base")"
        BC+=("$c") BB+=("$b")
        read -r _ p50 _ p99 <<<"$(sed -n 2p <<<"$base")"
        BP50+=("$p50") BP99+=("$p99")
    done
    for spec in "timer set+cancel|ns|SC|BC" "bytes per armed timer|B|SB|BB" \
        "wake from a thread, p50|us|SP50|BP50" "wake from a thread, p99|us|SP99|BP99"; do
        IFS='|' read -r figure unit a b <<<"$spec"
        declare -n av=$a bv=$b
        ma=$(median "${av[@]}")
        mb=$(median "${bv[@]}")
        row "$figure" "$unit" "$ma" "tokio" "$mb" "$(ratio "$ma" "$mb")" "-" "-" "-" "lower is better"
        unset -n av bv
    done
    NOTES+=("services: servicekit's timerbench/wakebench run inside the plugin (set+cancel through the FFI table, 100,000 timers 1 h ahead; a thread wakes its connection 5,000 times, one wake in flight); the baseline does the same with tokio::time::sleep (boxed, polled once) and a tokio unbounded channel. A sockhost wake is two task hops (the worker's wake channel, then the connection's task).")
fi

# --- fan-out: one publisher, 1,000 subscribers; sockhost + libchat vs redis and plain tokio --
if section fanout; then
    ensure_packages redis-server=redis-server
    [[ -f $RELEASE/libchat.so && -x $RELEASE/fanout-baseline ]] ||
        die "$RELEASE/libchat.so or $RELEASE/fanout-baseline is missing"
    start_server sockhost-chat "${PRIO[@]}" taskset -c $SERVER_CPU "$SOCKHOST" --plugin "$RELEASE/libchat.so" \
        --bind 127.0.0.1:0 --concurrency thread --keep-alive 0
    SH_PID=$SERVER_PID SH_ADDR=$SERVER_ADDR
    start_server fanout-baseline "${PRIO[@]}" taskset -c $SERVER_CPU "$RELEASE/fanout-baseline" --bind 127.0.0.1:0
    BL_PID=$SERVER_PID BL_ADDR=$SERVER_ADDR
    start_redis redis $SERVER_CPU
    # loadgen speaks RESP to a redis:// address and chat's line protocol to the others.
    fanout=("$RELEASE/loadgen" fanout --addr @ADDR@ --subscribers 1000 --size 64
        --messages "$FANOUT_MESSAGES" --json)
    pair "fan-out 1 pub -> 1000 subs, 64B" deliv/s "-" json:deliveries_per_sec json:elapsed_s \
        $CLIENT_CPU sockhost "$SH_PID" "$SH_ADDR" redis "$REDIS_PID" "redis://$REDIS_ADDR" -- \
        "${fanout[@]}"
    pair "fan-out 1 pub -> 1000 subs, 64B" deliv/s "-" json:deliveries_per_sec json:elapsed_s \
        $CLIENT_CPU sockhost "$SH_PID" "$SH_ADDR" tokio "$BL_PID" "$BL_ADDR" -- \
        "${fanout[@]}"
    NOTES+=("fan-out: loadgen fanout, $FANOUT_MESSAGES messages of 64 B to 1000 subscribers of one channel (chat: 79 B per delivery, redis: 99 B in RESP), the publisher at most 64 messages ahead of the slowest subscriber; timed from the first PUBLISH to the last delivery; server CPU includes the 1000 connects and SUBSCRIBEs. redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), --save '' --appendonly no.")
    stop_server "$SH_PID"
    stop_server "$BL_PID"
    stop_server "$REDIS_PID"
fi

# --- proxy: sockhost + libproxy vs HAProxy (mode tcp) and nginx stream, one worker each ----
# Each proxy runs pinned to CPU $SERVER_CPU; the load generator and the upstream share CPU
# $CLIENT_CPU (on 2 cores they cannot also be pinned apart from each other). The three
# proxies are measured back to back for each figure, and each gets a row against sockhost.
if section proxy; then
    ensure_packages haproxy=haproxy "$NGINX_STREAM_MODULE=libnginx-mod-stream"
    [[ -f $RELEASE/libproxy.so ]] || die "$RELEASE/libproxy.so is missing (cargo build --release -p proxy)"
    # start_proxies NAME UPSTREAM: the three proxies in front of UPSTREAM; sets PX_PID and
    # PX_ADDR (sockhost), HAPROXY_PID/ADDR and NGINX_PID/ADDR (nginx stream).
    start_proxies() {
        start_server "sockhost-proxy-$1" "${PRIO[@]}" taskset -c $SERVER_CPU "$SOCKHOST" \
            --plugin "$RELEASE/libproxy.so" --bind 127.0.0.1:0 --concurrency thread \
            --keep-alive 0 --plugin-opt "upstream=$2" --plugin-opt stats-interval=0
        PX_PID=$SERVER_PID PX_ADDR=$SERVER_ADDR
        start_haproxy "haproxy-$1" $SERVER_CPU "$2"
        start_nginx_stream "nginx-stream-$1" $SERVER_CPU "$2"
    }
    stop_proxies() {
        stop_server "$PX_PID"
        stop_server "$HAPROXY_PID"
        stop_server "$NGINX_PID"
    }
    # proxy_pair FIGURE UNIT PARSER SPAN -- CMD: one figure, the three proxies.
    proxy_pair() {
        local figure=$1 unit=$2 parser=$3 span=$4
        shift 5
        pair "$figure" "$unit" ">=1.0" "$parser" "$span" $CLIENT_CPU \
            sockhost "$PX_PID" "$PX_ADDR" haproxy "$HAPROXY_PID" "$HAPROXY_ADDR" \
            nginx-stream "$NGINX_PID" "$NGINX_ADDR" -- "$@"
    }

    start_nginx nginx-upstream 1 $CLIENT_CPU
    UP_PID=$NGINX_PID UP_ADDR=$NGINX_ADDR
    start_proxies http "$UP_ADDR"
    for addr in "$PX_ADDR" "$HAPROXY_ADDR" "$NGINX_ADDR"; do
        check_http "proxy to nginx" "http://$addr/" >/dev/null
    done
    for c in 50 500; do
        proxy_pair "proxy HTTP, wrk -c$c" req/s wrk "$PROXY_WRK_DURATION" -- \
            wrk -t1 -c"$c" -d"$PROXY_WRK_DURATION"s "http://@ADDR@/"
    done
    proxy_pair "proxy connect rate, 16 loops" conns/s json:conns_per_sec "$SPAN" -- \
        "$RELEASE/loadgen" connect --http --addr @ADDR@ --concurrency 16 \
        --duration "$DURATION" --warmup "$WARMUP" --json
    stop_proxies
    stop_server "$UP_PID"

    start_server echo-upstream "${PRIO[@]}" taskset -c $CLIENT_CPU "$RELEASE/echo-baseline" \
        --bind 127.0.0.1:0
    UP_PID=$SERVER_PID UP_ADDR=$SERVER_ADDR
    start_proxies bulk "$UP_ADDR"
    proxy_pair "proxy bulk 64KiB echo, 10 conns" msgs/s json:msgs_per_sec "$SPAN" -- \
        "$RELEASE/loadgen" echo --addr @ADDR@ --connections 10 --size 65536 \
        --duration "$DURATION" --warmup "$WARMUP" --json
    stop_proxies
    stop_server "$UP_PID"
    NOTES+=("proxy rows: every proxy (sockhost thread mode + libproxy; $(haproxy -v | awk 'NR == 1 { print "HAProxy", $3 }') mode tcp, nbthread 1, no splicing; nginx $(nginx -v 2>&1 | sed 's|.*/||') stream proxy_pass, default buffers) runs one worker pinned to CPU $SERVER_CPU; the load generator and the upstream (nginx return 200, 1 worker; echo-baseline for bulk) share CPU $CLIENT_CPU, so the client side saturates first: compare cpu/op (proxy CPU per request).")
fi

# --- redis: sockhost + libredis vs redis-server, redis-benchmark -------------------------
# redis_pair FIGURE PIPELINE N: redis-benchmark -c 50 -P PIPELINE -n N over
# set,get,incr,lpush,lpop against sockhost ($SH_PID at $SH_ADDR) and redis-server, back to
# back, REPS times. The rate of a run is its requests (5 N) over the time the five tests
# took (the sum of N / each test's requests/s); CPU per request is the server's CPU time
# over 5 N. Adds a row with the medians, and a note with each test's median ratio.
redis_pair() {
    local figure=$1 pipeline=$2 n=$3
    local names=(sockhost redis) pids=("$SH_PID" "$REDIS_PID") addrs=("$SH_ADDR" "$REDIS_ADDR")
    local -a rate_a=() rate_b=() us_a=() us_b=() cl_a=() cl_b=() sv_a=() sv_b=() other=()
    local rep side out rate us srv secs per_test
    declare -A tests_a=() tests_b=()
    wait_quiet
    for ((rep = 1; rep <= REPS; rep++)); do
        for side in 0 1; do
            out="$BENCH_TMP/redis.out.$side"
            measured_run "${pids[$side]}" $CLIENT_CPU "$out" redis-benchmark -h 127.0.0.1 \
                -p "${addrs[$side]##*:}" -c 50 -n "$n" -P "$pipeline" \
                -t set,get,incr,lpush,lpop --csv
            # "SET","178571.42",... one line per test.
            per_test=$(awk -F'"' 'NR > 1 && $4 > 0 { printf "%s=%s ", $2, $4 }' "$out")
            secs=$(awk -F'"' -v n="$n" 'NR > 1 && $4 > 0 { t += n / $4; c++ }
                END { if (c == 5) printf "%.6f", t; else print 0 }' "$out")
            if ((!RUN_OK)) || [[ $secs == 0 ]]; then
                echo "# $figure, ${names[$side]}: redis-benchmark failed:" >&2
                cat "$out" >&2
                tail -n 5 "$BENCH_TMP/client.err" >&2
                FAILED=1
                secs=0
            fi
            rate=$(awk -v n="$n" -v s="$secs" 'BEGIN { if (s > 0) printf "%.0f", 5 * n / s; else print 0 }')
            us=$(awk -v t="$RUN_TICKS" -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.3f", t / hz * 1e6 / (5 * n) }')
            srv=$(awk -v t="$RUN_TICKS" -v hz="$HZ" -v s="$secs" 'BEGIN { if (s > 0) printf "%.0f", 100 * t / hz / s; else print 0 }')
            echo "# $figure: ${names[$side]} $rate req/s ($per_test), server ${srv}% cpu" \
                "${us} us/req, client ${RUN_CLIENT}%, others ${RUN_OTHER}%" >&2
            other+=("$RUN_OTHER")
            local t
            for t in $per_test; do
                if ((side == 0)); then
                    tests_a[${t%%=*}]+="${t#*=} "
                else
                    tests_b[${t%%=*}]+="${t#*=} "
                fi
            done
            if ((side == 0)); then
                rate_a+=("$rate") us_a+=("$us") cl_a+=("$RUN_CLIENT") sv_a+=("$srv")
            else
                rate_b+=("$rate") us_b+=("$us") cl_b+=("$RUN_CLIENT") sv_b+=("$srv")
            fi
        done
    done
    local ma mb r ua ub detail name ratios=""
    ma=$(median "${rate_a[@]}")
    mb=$(median "${rate_b[@]}")
    r=$(ratio "$ma" "$mb")
    ua=$(median "${us_a[@]}")
    ub=$(median "${us_b[@]}")
    detail=$(printf 'srv us/req %s/%s  srv cpu %s/%s%%  client cpu %s/%s%%  others %s%%' \
        "$ua" "$ub" "$(median "${sv_a[@]}")" "$(median "${sv_b[@]}")" \
        "$(median "${cl_a[@]}")" "$(median "${cl_b[@]}")" "$(median "${other[@]}")")
    local target=">=1.0"
    ((pipeline > 1)) && target=">=0.8"
    row "$figure" req/s "$(printf '%.0f' "$ma")" redis-server "$(printf '%.0f' "$mb")" \
        "$r" "$target" "$(verdict "$r" "$target")" "$(ratio "$ub" "$ua")" "$detail"
    for name in SET GET INCR LPUSH LPOP; do
        # shellcheck disable=SC2086 # one number per word
        ratios+="$name $(ratio "$(median ${tests_a[$name]:-0})" "$(median ${tests_b[$name]:-0})") "
    done
    NOTES+=("$figure, per test (sockhost/redis-server req/s): $ratios")
}

if section redis; then
    ensure_packages redis-server=redis-server redis-benchmark=redis-tools
    [[ -f $RELEASE/libredis.so ]] || die "$RELEASE/libredis.so is missing (cargo build --release -p redis)"
    start_server sockhost-redis "${PRIO[@]}" taskset -c $SERVER_CPU "$SOCKHOST" --plugin "$RELEASE/libredis.so" \
        --bind 127.0.0.1:0 --concurrency thread --keep-alive 0
    SH_PID=$SERVER_PID SH_ADDR=$SERVER_ADDR
    start_redis redis-server $SERVER_CPU
    redis_pair "redis -c50 -P1, 5 commands" 1 "$REDIS_N"
    redis_pair "redis -c50 -P16, 5 commands" 16 "$REDIS_N_PIPELINED"
    NOTES+=("redis: $(redis-server --version | awk '{ print $1, $2, $3 }'); req/s = 5 N / (sum over set,get,incr,lpush,lpop of N / that test's req/s); srv us/req = server CPU time / 5 N.")
    stop_server "$SH_PID"
    stop_server "$REDIS_PID"
fi

# --- scaling: process mode with 1, 2, 4, ... workers vs nginx with as many workers --------
# The layout comes from the machine (nproc), so the section runs unchanged on a bigger one:
# the servers get the first half of the CPUs (at least one), wrk the rest, one thread per
# CPU. Worker counts double from 1 up to the servers' CPUs (pinned to the first W of
# them), and 2 is always measured: where W workers do not fit on the servers' CPUs (2 on a
# 2-core machine) servers and wrk share every CPU, and the row is marked *. wrk keeps
# SCALE_CONNS_PER_WORKER (50) connections per worker open (keep-alive). For W >= 2 a second,
# shorter wrk run of the same shape counts the established connections of each worker
# process (ss -p: the same for sockhost's SO_REUSEPORT group and nginx's shared socket) and
# a row shows the spread: the busiest worker's count over the mean.

# spread_of PID_ROOT PORT WORKERS CPUS THREADS CONNS: while wrk holds CONNS connections to
# 127.0.0.1:PORT, the number of them each worker process of PID_ROOT holds; sets SPREAD
# (the counts, busiest first, zeros for workers without any) and SPREAD_MAX_MEAN.
spread_of() {
    local root=$1 port=$2 workers=$3 cpus=$4 threads=$5 conns=$6 wrk_pid i seen=0
    "${PRIO[@]}" taskset -c "$cpus" wrk -t"$threads" -c"$conns" -d5s "http://127.0.0.1:$port/" \
        >"$BENCH_TMP/spread.wrk" 2>&1 &
    wrk_pid=$!
    BENCH_PIDS+=("$wrk_pid")
    # Bounded: every connection is up well within 2 s, or the count says how many were.
    for ((i = 0; i < 20; i++)); do
        sleep 0.1
        seen=$(established "$port")
        ((seen >= conns)) && break
    done
    # ss -p names a socket's process by scanning /proc/*/fd: at the servers' and wrk's
    # real-time priority, or on 2 busy cores it may not get to run before wrk is done. Read
    # again (bounded) until it names them all.
    local -a counts=()
    local named=0
    for ((i = 0; i < 10; i++)); do
        sleep 0.1
        mapfile -t counts < <("${PRIO[@]}" ss -Htnp state established "( sport = :$port )" 2>/dev/null |
            grep -o 'pid=[0-9]*' | sort | uniq -c | awk '{ print $1 }' | sort -rn)
        named=$(printf '%s\n' "${counts[@]}" | awk '{ t += $1 } END { print t + 0 }')
        ((named >= seen)) && break
    done
    kill -TERM "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" 2>/dev/null || true
    if ((named < seen)); then
        echo "# spread: ss -p named the process of $named of the $seen connections to :$port;" \
            "wrk said:" >&2
        cat "$BENCH_TMP/spread.wrk" >&2
    fi
    while ((${#counts[@]} < workers)); do counts+=(0); done
    SPREAD="${counts[*]}"
    SPREAD_MAX_MEAN=$(printf '%s\n' "${counts[@]}" | awk -v w="$workers" \
        '{ t += $1; if ($1 > m) m = $1 } END { if (t > 0) printf "%.2f", m * w / t; else print "nan" }')
}

if section scaling; then
    command -v curl >/dev/null || ensure_packages curl=curl
    SCALE_CONNS_PER_WORKER=${SCALE_CONNS_PER_WORKER:-50}
    ncpu=$(nproc)
    srv_n=$((ncpu / 2 > 0 ? ncpu / 2 : 1))
    if ((ncpu > 1)); then
        client_cpus="$srv_n-$((ncpu - 1))" client_n=$((ncpu - srv_n))
    else
        client_cpus=0 client_n=1
    fi
    counts=()
    for ((w = 1; w <= srv_n; w *= 2)); do counts+=("$w"); done
    ((srv_n >= 2)) || counts+=(2)
    declare -A SCALE_SH=() SCALE_NG=()
    for w in "${counts[@]}"; do
        if ((w <= srv_n)); then
            scpus="0-$((w - 1))" ccpus=$client_cpus threads=$client_n mark=""
        else
            scpus=$ALL_CPUS ccpus=$ALL_CPUS threads=1 mark="*"
        fi
        c=$((SCALE_CONNS_PER_WORKER * w))
        ((c >= threads)) || c=$threads
        start_server "sockhost-scale$w" "${PRIO[@]}" taskset -c "$scpus" "$SOCKHOST" \
            --plugin "$RELEASE/libhello.so" --bind 127.0.0.1:0 --workers "$w" --keep-alive 0
        SH_PID=$SERVER_PID SH_ADDR=$SERVER_ADDR
        start_nginx "nginx-scale$w" "$w" "$scpus"
        check_http sockhost "http://$SH_ADDR/" >/dev/null
        check_http nginx "http://$NGINX_ADDR/" >/dev/null
        label="$w worker"
        ((w > 1)) && label+="s"
        pair "scaling HTTP, $label$mark, -c$c" req/s "-" wrk "$WRK_DURATION" "$ccpus" \
            sockhost "$SH_PID" "$SH_ADDR" nginx "$NGINX_PID" "$NGINX_ADDR" -- \
            wrk -t"$threads" -c"$c" -d"$WRK_DURATION"s "http://@ADDR@/"
        SCALE_SH[$w]="$PAIR_RATE_A $PAIR_US_A" SCALE_NG[$w]="$PAIR_RATE_B $PAIR_US_B"
        if ((w > 1)); then
            spread_of "$SH_PID" "${SH_ADDR##*:}" "$w" "$ccpus" "$threads" "$c"
            sh_spread=$SPREAD sh_mm=$SPREAD_MAX_MEAN
            spread_of "$NGINX_PID" "$NGINX_PORT" "$w" "$ccpus" "$threads" "$c"
            row "scaling spread, $label$mark" max/mean "$sh_mm" nginx "$SPREAD_MAX_MEAN" \
                "$(ratio "$sh_mm" "$SPREAD_MAX_MEAN")" "-" "-" "-" \
                "connections per worker (of $c): $sh_spread / $SPREAD"
        fi
        stop_server "$SH_PID"
        stop_server "$NGINX_PID"
    done
    # req/s and CPU per request at each worker count, relative to 1 worker.
    scale_note="scaling, relative to 1 worker (req/s, srv us/req):"
    read -r r1 _ <<<"${SCALE_SH[1]}"
    read -r n1 _ <<<"${SCALE_NG[1]}"
    for w in "${counts[@]}"; do
        read -r rw uw <<<"${SCALE_SH[$w]}"
        read -r nw vw <<<"${SCALE_NG[$w]}"
        scale_note+=" $w: sockhost $(ratio "$rw" "$r1")x, ${uw} us; nginx $(ratio "$nw" "$n1")x, ${vw} us;"
    done
    NOTES+=("$scale_note layout: $ncpu CPUs, servers on CPU 0-$((srv_n - 1)), wrk (-t$client_n) on CPU $client_cpus; * = more workers than the servers' CPUs: servers and wrk share all CPUs, so throughput is the machine's, not the server's; compare srv us/req. Spread: established connections per worker process (ss -p) while wrk holds them.")
fi

echo
echo "sockhost vs what users would pick instead — $(date -u +%Y-%m-%d), $(nproc) CPUs" \
    "($(lscpu | sed -n 's/^Model name: *//p'))"
echo "median of $REPS runs; single-worker servers pinned to CPU $SERVER_CPU, load generator" \
    "to CPU $CLIENT_CPU; ratio = sockhost / other (for memory, lower is better)"
echo
printf '%-34s %-8s %10s  %-12s %10s %6s  %-6s %-4s %7s  %s\n' figure unit sockhost "vs" other ratio \
    target met "cpu/op" "detail (sockhost/other)"
printf '%s\n' "${ROWS[@]}"
echo
for note in "${NOTES[@]}"; do
    echo "note: $note"
done
echo "note: srv us/op = server CPU time per operation; cpu/op = other's srv us/op / sockhost's" \
    "(above 1: sockhost spends less CPU per operation). Where the load generator is the bottleneck" \
    "(client cpu ~96%, both servers below 100% or equal), the throughput ratio only says both kept up," \
    "and cpu/op is the comparison of the servers' capacity."
echo "note: others = CPU used during the runs by processes other than the server and the" \
    "load generator (% of one core, median)."
if ((NOISY > 0)); then
    echo "WARNING: in $NOISY of $RUNS runs other processes used more than 15% of a core;" \
        "those figures are noisy: rerun on an idle machine."
fi
echo "(took $(($(date +%s) - STARTED)) s)"
if ((FAILED)); then
    echo "FAILED: some load generator run reported errors (see stderr)."
fi
exit "$FAILED"
