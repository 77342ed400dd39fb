# shellcheck shell=bash disable=SC2034 # (variables set here are read by the sourcing scripts)
# Helpers shared by the bench/*.sh scripts: build, start a server and wait for its
# `listening on` line, read its memory and CPU, and stop everything this script started
# (by PID, on any exit).
#
# Source it from a script that has `set -euo pipefail` and has cd'ed to the workspace root.

BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/sockhost-bench.XXXXXX")
BENCH_PIDS=()
# The binaries measured (RELEASE=/other/target/release NO_BUILD=1 measures another build).
RELEASE=${RELEASE:-target/release}
# The scheduling priority of servers and load generators (as a command prefix), so that
# other processes on the machine (a build) disturb a measurement less. BENCH_PRIO=rt (the
# default, when allowed: root): real-time SCHED_RR 1, which on a 2-core machine busy with
# a build doubled echo throughput and cut p99 latency from 6 ms to 0.3 ms (the kernel's RT
# throttling still leaves other processes 5% of each core; round-robin, not FIFO, so that
# unpinned servers and load generator still share a core by time slices); nice: nice -10,
# which did not help much; none.
PRIO=()
case ${BENCH_PRIO:-rt} in
rt) chrt -r 1 true 2>/dev/null && PRIO=(chrt -r 1) ;;
nice) nice -n -10 true 2>/dev/null && PRIO=(nice -n -10) ;;
none) ;;
*)
    echo "error: BENCH_PRIO=${BENCH_PRIO}: expected rt, nice or none" >&2
    exit 1
    ;;
esac
# Every CPU, as a taskset list (for servers that are not pinned).
ALL_CPUS="0-$(($(nproc) - 1))"

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

# Build the release binaries. The whole workspace is tried first (sockhost + the plugins +
# the bench tools); if that fails (e.g. someone is mid-edit in tests/), only the crates the
# benchmarks run are built; if even that fails (someone is mid-edit in host/), only the bench
# crate and libhello are built and the sockhost binaries already in target/release are used.
build_release() {
    echo "# building (cargo build --release)" >&2
    if ! cargo build --release --quiet 2>"$BENCH_TMP/build.log"; then
        echo "# workspace build failed; building only what the benchmarks run (see below)" >&2
        tail -n 5 "$BENCH_TMP/build.log" >&2
        if ! cargo build --release --quiet -p sockhost -p echo -p hello -p chat -p proxy -p sockhost-bench \
            2>"$BENCH_TMP/build.log"; then
            echo "# building sockhost failed too; using the existing $RELEASE/sockhost and" \
                "$RELEASE/libecho.so" >&2
            tail -n 5 "$BENCH_TMP/build.log" >&2
            cargo build --release --quiet -p sockhost-bench -p hello ||
                die "building sockhost-bench failed"
        fi
    fi
    local f
    for f in sockhost libecho.so libhello.so echo-baseline udp-baseline loadgen; do
        [[ -x $RELEASE/$f || -f $RELEASE/$f ]] || die "$RELEASE/$f is missing"
    done
}

# ensure_packages CMD=PACKAGE...: install (apt-get, Debian's packages) the packages whose
# command is missing (CMD may be an absolute path instead: a file the package installs);
# `apt-get update` only if a first install attempt fails.
ensure_packages() {
    local missing=() pair have
    for pair in "$@"; do
        have=${pair%%=*}
        if [[ $have == /* ]]; then
            [[ -e $have ]] || missing+=("${pair#*=}")
        else
            command -v "$have" >/dev/null 2>&1 || missing+=("${pair#*=}")
        fi
    done
    ((${#missing[@]} == 0)) && return 0
    echo "# installing ${missing[*]} (apt-get)" >&2
    command -v apt-get >/dev/null || die "${missing[*]} missing and no apt-get to install them"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" \
        >"$BENCH_TMP/apt.log" 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$BENCH_TMP/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" \
            >>"$BENCH_TMP/apt.log" 2>&1 || {
            tail -n 20 "$BENCH_TMP/apt.log" >&2
            die "installing ${missing[*]} failed"
        }
    fi
    # The nginx package may start a system nginx on :80; the benchmarks run their own.
    if [[ " ${missing[*]} " == *" nginx "* ]] && command -v systemctl >/dev/null; then
        systemctl stop nginx >/dev/null 2>&1 || true
    fi
}

# start_server NAME CMD...: run CMD in the background (stdout/stderr to files), wait for
# its `listening on tcp://ADDR` (or `udp://ADDR`) line, and set SERVER_PID and SERVER_ADDR.
start_server() {
    local name=$1
    shift
    local out="$BENCH_TMP/$name.out" err="$BENCH_TMP/$name.err"
    # Created here, not by the background job, so that they exist when first read.
    : >"$out"
    : >"$err"
    "$@" >"$out" 2>"$err" &
    SERVER_PID=$!
    BENCH_PIDS+=("$SERVER_PID")
    local i
    for ((i = 0; i < 100; i++)); do
        SERVER_ADDR=$(sed -n 's|^listening on [a-z]*://||p' "$out" | head -n 1)
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

# cpu_ticks PID: user + system CPU time of the whole process, in clock ticks. (The fields
# are counted after the command name, which may hold spaces: process-mode workers are
# titled `sockhost w0 g1`; utime and stime are then the 12th and 13th.)
cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# tree_pids PID: PID and all its descendants.
tree_pids() {
    local pid=$1 child
    echo "$pid"
    # shellcheck disable=SC2013 # pids: one word each
    for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        tree_pids "$child"
    done
}

# tree_ticks PID: user + system CPU time of PID and its live descendants (process-mode
# workers, nginx workers), in clock ticks.
tree_ticks() {
    local total=0 p t
    for p in $(tree_pids "$1"); do
        t=$(cpu_ticks "$p" 2>/dev/null || echo 0)
        total=$((total + ${t:-0}))
    done
    echo "$total"
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

# free_port: a TCP port no socket uses (for a server that cannot bind port 0 and say which
# port it got: nginx), below the ephemeral range, so that no client connection (ours, or
# anyone's on the machine) takes it meanwhile.
free_port() {
    local i p low
    low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    ((low > 12000)) || low=32768
    for ((i = 0; i < 50; i++)); do
        p=$((10000 + RANDOM % (low - 10000)))
        if [[ -z $(ss -Htan "( sport = :$p )" 2>/dev/null) ]]; then
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# start_nginx NAME WORKERS CPUS [CERT KEY]: nginx answering every request with
# `200 Hello, world!\n` (the hello plugin's answer) on a free loopback port, pinned to CPUS
# (a taskset list), over TLS with CERT/KEY if given. Sets NGINX_PID (the master),
# NGINX_ADDR, NGINX_PORT and NGINX_WORKER (the first worker's pid).
#
# Configured as one would for a benchmark, and so that it does no work sockhost does not:
# no access log; keep-alive connections are never closed for their request count or idle
# time (nginx's default closes one after 1,000 requests, sockhost never does);
# worker_connections 20000 (the idle-memory run holds 10,000 connections).
start_nginx() {
    local attempt
    for attempt in 1 2 3; do
        start_nginx_once "$@" && return 0
        echo "# nginx could not start (attempt $attempt); trying another port" >&2
    done
    die "$1 (nginx) did not start"
}

# start_nginx_on PORT NAME WORKERS CPUS [CERT KEY]: start_nginx on a given port.
start_nginx_on() {
    NGINX_FIXED_PORT=$1 start_nginx_once "${@:2}" || die "$2 (nginx) did not start on port $1"
}

start_nginx_once() {
    local name=$1 workers=$2 cpus=$3 cert=${4:-} key=${5:-}
    NGINX_PORT=${NGINX_FIXED_PORT:-$(free_port)}
    NGINX_ADDR="127.0.0.1:$NGINX_PORT"
    local ngx="$BENCH_TMP/$name" tls_listen="" tls_conf="" listen2="" reuseport=""
    [[ -n $name ]] || die "start_nginx: no name"
    mkdir -p "$ngx/logs" "$ngx/tmp"
    if [[ -n $cert ]]; then
        tls_listen=" ssl"
        # Same protocols as sockhost (TLS 1.3 and 1.2); nginx 1.22's default lacks 1.3.
        # The same TLS 1.3 cipher suite preference as sockhost's (AES-128-GCM first, the
        # server's order), so that both do the same key schedule and bulk cipher. Session
        # tickets on (nginx's default, said explicitly: the resumed-handshake rows need them;
        # the keys are made at start-up and shared by the workers, as sockhost's are).
        tls_conf="ssl_certificate $cert; ssl_certificate_key $key; ssl_protocols TLSv1.2 TLSv1.3;"
        tls_conf+=" ssl_prefer_server_ciphers on; ssl_session_tickets on;"
        tls_conf+=" ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;"
    fi
    # NGINX_EXTRA_PORTS (set by the caller): more listening ports, all in SO_REUSEPORT
    # groups of one socket per worker (as sockhost's workers), for runs with more
    # connections than one destination's ephemeral ports allow.
    if [[ -n ${NGINX_EXTRA_PORTS:-} ]]; then
        reuseport=" reuseport"
        local p
        for p in $NGINX_EXTRA_PORTS; do
            listen2+="listen 127.0.0.1:$p$tls_listen$reuseport backlog=4096; "
        done
    fi
    {
        # A layer-4 proxy (start_nginx_stream) needs the stream module, as Debian ships it.
        [[ -z ${NGINX_STREAM_TO:-} ]] || echo "load_module $NGINX_STREAM_MODULE;"
        cat <<NGINX
daemon off;
master_process on;
worker_processes $workers;
worker_rlimit_nofile 20000;
pid $ngx/nginx.pid;
error_log $ngx/logs/error.log warn;
events { worker_connections 20000; }
NGINX
        if [[ -n ${NGINX_STREAM_TO:-} ]]; then
            cat <<NGINX
stream {
    server {
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        proxy_pass $NGINX_STREAM_TO;
    }
}
NGINX
        else
            cat <<NGINX
http {
    access_log off;
    keepalive_timeout 3600;
    keepalive_requests 1000000000;
    client_header_timeout 3600;
    client_body_temp_path $ngx/tmp/body;
    proxy_temp_path $ngx/tmp/proxy;
    fastcgi_temp_path $ngx/tmp/fastcgi;
    uwsgi_temp_path $ngx/tmp/uwsgi;
    scgi_temp_path $ngx/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT$tls_listen$reuseport backlog=4096;
        $listen2
        $tls_conf
        location / { default_type text/plain; return 200 "Hello, world!\n"; }
    }
}
NGINX
        fi
    } >"$ngx/nginx.conf"
    "${PRIO[@]}" taskset -c "$cpus" nginx -p "$ngx" -e "$ngx/logs/error.log" -c "$ngx/nginx.conf" \
        >"$ngx/stdout" 2>&1 &
    NGINX_PID=$!
    BENCH_PIDS+=("$NGINX_PID")
    NGINX_WORKER=""
    local i n
    for ((i = 0; i < 100; i++)); do
        if [[ -n $(ss -Htln "( sport = :$NGINX_PORT )" 2>/dev/null) ]]; then
            n=$(cat /proc/"$NGINX_PID"/task/*/children 2>/dev/null | wc -w)
            if ((n >= workers)); then
                NGINX_WORKER=$(cat /proc/"$NGINX_PID"/task/*/children | awk '{ print $1 }')
                return 0
            fi
        fi
        kill -0 "$NGINX_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$ngx/stdout" "$ngx/logs/error.log" >&2 || true
    stop_server "$NGINX_PID"
    return 1
}

# Debian's nginx loads its stream module (package libnginx-mod-stream) from here.
NGINX_STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so

# start_nginx_stream NAME CPUS UPSTREAM: nginx as a layer-4 proxy (`stream { proxy_pass
# UPSTREAM; }`), one worker pinned to CPUS; sets what start_nginx sets.
start_nginx_stream() {
    NGINX_STREAM_TO=$3 start_nginx "$1" 1 "$2"
}

# start_haproxy NAME CPUS UPSTREAM: HAProxy in `mode tcp` (one thread, Debian's defaults
# otherwise: no splicing) forwarding a free loopback port to UPSTREAM, pinned to CPUS. Sets
# HAPROXY_PID and HAPROXY_ADDR.
start_haproxy() {
    local name=$1 cpus=$2 upstream=$3 port i
    port=$(free_port)
    HAPROXY_ADDR="127.0.0.1:$port"
    mkdir -p "$BENCH_TMP/$name"
    cat >"$BENCH_TMP/$name/haproxy.cfg" <<HAPROXY
global
    nbthread 1
    maxconn 9000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend front
    bind 127.0.0.1:$port
    default_backend upstream
backend upstream
    server upstream $upstream
HAPROXY
    "${PRIO[@]}" taskset -c "$cpus" haproxy -db -f "$BENCH_TMP/$name/haproxy.cfg" \
        >"$BENCH_TMP/$name/out" 2>&1 &
    HAPROXY_PID=$!
    BENCH_PIDS+=("$HAPROXY_PID")
    for ((i = 0; i < 100; i++)); do
        [[ -n $(ss -Htln "( sport = :$port )" 2>/dev/null) ]] && return 0
        kill -0 "$HAPROXY_PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$BENCH_TMP/$name/out" >&2
    die "$name (haproxy) did not start listening"
}

# start_redis NAME CPUS: redis-server (Debian's) on a free loopback port, pinned to CPUS,
# with persistence off (no RDB snapshots, no AOF: a pub/sub benchmark writes nothing to
# disk) and the default client limits. Sets REDIS_PID and REDIS_ADDR (HOST:PORT).
start_redis() {
    local name=$1 cpus=$2 port attempt i
    for attempt in 1 2 3; do
        port=$(free_port)
        "${PRIO[@]}" taskset -c "$cpus" redis-server --port "$port" --bind 127.0.0.1 \
            --save "" --appendonly no --daemonize no --logfile "" \
            >"$BENCH_TMP/$name.out" 2>&1 &
        REDIS_PID=$!
        BENCH_PIDS+=("$REDIS_PID")
        REDIS_ADDR="127.0.0.1:$port"
        for ((i = 0; i < 100; i++)); do
            [[ -n $(ss -Htln "( sport = :$port )" 2>/dev/null) ]] && return 0
            kill -0 "$REDIS_PID" 2>/dev/null || break
            sleep 0.1
        done
        tail -n 5 "$BENCH_TMP/$name.out" >&2
        stop_server "$REDIS_PID"
        echo "# redis-server could not start (attempt $attempt); trying another port" >&2
    done
    die "$name (redis-server) did not start"
}

# measure_idle NAME PID ADDR [loadgen idle flags...]: open CONNS idle connections to ADDR
# with `loadgen idle` and read process PID's RSS before and once they are all open. Sets
# IDLE_BEFORE / IDLE_AFTER (KiB), IDLE_OPENED, IDLE_SEEN (established per ss),
# IDLE_PER_CONN (RSS growth per connection, bytes) and IDLE_OK (0 if loadgen reported a
# problem). Environment: CONNS, HOLD (seconds loadgen holds them), SETTLE (seconds between
# `opened` and reading RSS).
measure_idle() {
    local name=$1 pid=$2 addr=$3
    shift 3
    sleep 0.3
    local line i
    IDLE_BEFORE=$(rss_kb "$pid")
    local log="$BENCH_TMP/$name.loadgen"
    "$RELEASE/loadgen" idle --addr "$addr" --connections "$CONNS" --hold "$HOLD" "$@" \
        >"$log" 2>"$log.err" &
    local lg=$!
    BENCH_PIDS+=("$lg")
    line=""
    for ((i = 0; i < 1200; i++)); do
        line=$(grep -m1 '^opened' "$log" 2>/dev/null || true)
        [[ -n $line ]] && break
        kill -0 "$lg" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n $line ]] || {
        cat "$log.err" >&2
        die "$name: loadgen never printed 'opened'"
    }
    IDLE_OPENED=$(awk '{ print $2 }' <<<"$line")
    sleep "$SETTLE"
    IDLE_AFTER=$(rss_kb "$pid")
    IDLE_SEEN=$(established "${addr##*:}")
    IDLE_OK=1
    if ! wait "$lg"; then
        echo "# $name: loadgen reported a problem:" >&2
        cat "$log" "$log.err" >&2
        IDLE_OK=0
    fi
    IDLE_PER_CONN=$(((IDLE_AFTER - IDLE_BEFORE) * 1024 / (IDLE_OPENED > 0 ? IDLE_OPENED : 1)))
    echo "# $name: $line; server saw $IDLE_SEEN established; rss ${IDLE_BEFORE} -> ${IDLE_AFTER} KiB" >&2
}

# tree_rss_kb PID: VmRSS of PID and its live descendants (process-mode workers), in KiB.
tree_rss_kb() {
    local total=0 p
    for p in $(tree_pids "$1"); do
        total=$((total + $(rss_kb "$p" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# measure_idle_many NAME ROOT_PID PER_CLIENT ADDR... -- [loadgen idle flags...]: measure_idle
# over several client processes, one per ADDR with PER_CLIENT connections each (no process
# may hold more than 20,000 descriptors, and one destination address has only ~28,000
# ephemeral ports), and over the server's whole process tree. The clients hold their
# connections until the RSS is read, then are stopped. Sets the same variables as
# measure_idle; IDLE_OK is 1 when every connection opened and the server shows them all
# established.
measure_idle_many() {
    local name=$1 root=$2 per=$3
    shift 3
    local addrs=() logs=() lgs=() a log line i n
    while [[ $1 != -- ]]; do
        addrs+=("$1")
        shift
    done
    shift
    sleep 0.3
    IDLE_BEFORE=$(tree_rss_kb "$root")
    for a in "${addrs[@]}"; do
        log="$BENCH_TMP/$name.${#lgs[@]}.loadgen"
        "$RELEASE/loadgen" idle --addr "$a" --connections "$per" --hold 3600 "$@" >"$log" 2>"$log.err" &
        lgs+=("$!")
        BENCH_PIDS+=("$!")
        logs+=("$log")
    done
    IDLE_OPENED=0
    for log in "${logs[@]}"; do
        line=""
        for ((i = 0; i < 3000; i++)); do
            line=$(grep -m1 '^opened' "$log" 2>/dev/null || true)
            [[ -n $line ]] && break
            sleep 0.1
        done
        [[ -n $line ]] || {
            cat "$log.err" >&2
            die "$name: loadgen never printed 'opened'"
        }
        IDLE_OPENED=$((IDLE_OPENED + $(awk '{ print $2 }' <<<"$line")))
    done
    sleep "$SETTLE"
    IDLE_AFTER=$(tree_rss_kb "$root")
    IDLE_SEEN=0
    for a in "${addrs[@]}"; do
        n=$(established "${a##*:}")
        IDLE_SEEN=$((IDLE_SEEN + n))
    done
    for i in "${lgs[@]}"; do
        kill -TERM "$i" 2>/dev/null || true
        wait "$i" 2>/dev/null || true
    done
    IDLE_OK=0
    ((IDLE_OPENED == per * ${#addrs[@]} && IDLE_SEEN == IDLE_OPENED)) && IDLE_OK=1
    IDLE_PER_CONN=$(((IDLE_AFTER - IDLE_BEFORE) * 1024 / (IDLE_OPENED > 0 ? IDLE_OPENED : 1)))
    echo "# $name: opened $IDLE_OPENED from ${#addrs[@]} clients; server saw $IDLE_SEEN established; rss ${IDLE_BEFORE} -> ${IDLE_AFTER} KiB" >&2
}

# make_cert: a fresh ECDSA P-256 certificate for localhost in CERT / KEY (once per run).
make_cert() {
    CERT="$BENCH_TMP/cert.pem" KEY="$BENCH_TMP/key.pem"
    [[ -s $CERT ]] && return 0
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost \
        -addext basicConstraints=critical,CA:FALSE \
        -keyout "$KEY" -out "$CERT" >/dev/null 2>&1 || die "openssl could not make a certificate"
}
