#!/usr/bin/env bash
# A production-shaped cluster on loopback, from real parts:
#
#   scripts/cluster.sh start    Redis, LiveKit nodes sharing it (multi-node mode),
#                               HAProxy in front of the nodes, the public API and
#                               the workers (`mindbot-agent run`), one PostgreSQL
#   scripts/cluster.sh stop     stops them all (workers first, drained briefly)
#   scripts/cluster.sh status   what runs, on which port
#   scripts/cluster.sh fault F  one fault, while a load runs (bench load --fault F):
#       kill-worker      SIGKILL worker 1 (not restarted: the others take new jobs)
#       stop-node        stop LiveKit node 1 (SIGTERM, SIGKILL after 10 s; stays down)
#       restart-redis    stop Redis and start it again, empty (it keeps no data)
#       restart-postgres pg_ctl restart -m fast (the project-local server only)
#       cut-postgres     stop the PostgreSQL proxy for MINDBOT_CLUSTER_CUT_SECONDS (20)
#       rolling-deploy   SIGTERM each worker in turn, wait for it to drain and exit,
#                        start it again and wait until it is ready, then the next
#     Each step is appended to faults.log in the state directory as
#     "<unix ms> <event> <part> [worker id]", which bench load reads.
#
# Clients and workers reach LiveKit only through HAProxy (ws://127.0.0.1:$BASE+1),
# as they would a load balancer in production. Ports come from BASE..BASE+99
# (MINDBOT_CLUSTER_PORT_BASE, default 7700):
#   BASE      Redis                     BASE+1   HAProxy (signal, WebSocket)
#   BASE+2    HAProxy stats (/stats)    BASE+10n LiveKit node n: signal/HTTP,
#   +1 RTC TCP, +2 RTC UDP (muxed)      BASE+30  the public API (`mindbot-agent api`)
#   BASE+31.. each worker's /metrics, /readyz
#   BASE+3    HAProxy in TCP mode before PostgreSQL: the API and the workers
#             reach the database only through it, so cut-postgres can cut them
#             off (the load generator and migrations connect directly)
# Settings (environment): MINDBOT_CLUSTER_NODES (2), MINDBOT_CLUSTER_WORKERS (3),
# MINDBOT_CLUSTER_DATABASE_URL (default: DATABASE_URL's server, database
# mindbot_cluster, created when missing), MINDBOT_AGENT_BIN (default: the
# debug build in CARGO_TARGET_DIR), MINDBOT_CLUSTER_DIR (state and logs,
# default $CACHE/cluster), MINDBOT_LIVEKIT_GOGC (the LiveKit nodes' Go GOGC,
# 800) and MINDBOT_LIVEKIT_NICE (their nice value, -5; see start_node).
# Worker settings pass through as MINDBOT_* variables.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DIR="${MINDBOT_CLUSTER_DIR:-$CACHE/cluster}"
# Faults and status act on the running cluster as it was started.
if [ "${1:-}" != start ] && [ -f "$DIR/cluster.env" ]; then
    while IFS='=' read -r k v; do
        case "$k" in
            MINDBOT_CLUSTER_PORT_BASE | MINDBOT_CLUSTER_NODES | MINDBOT_CLUSTER_WORKERS | \
                MINDBOT_WORKER_DRAIN_TIMEOUT_SECONDS) export "$k=$v" ;;
            DATABASE_URL) export MINDBOT_CLUSTER_DATABASE_URL="$v" ;;
        esac
    done < "$DIR/cluster.env"
fi
BASE="${MINDBOT_CLUSTER_PORT_BASE:-7700}"
NODES="${MINDBOT_CLUSTER_NODES:-2}"
WORKERS="${MINDBOT_CLUSTER_WORKERS:-3}"
DRAIN="${MINDBOT_WORKER_DRAIN_TIMEOUT_SECONDS:-20}"
LIVEKIT_GOGC="${MINDBOT_LIVEKIT_GOGC:-800}"
LIVEKIT_NICE="${MINDBOT_LIVEKIT_NICE:--5}"
KEY="${LIVEKIT_API_KEY:-devkey}"
SECRET="${LIVEKIT_API_SECRET:-secret}"
DATABASE_URL="${DATABASE_URL:-postgres://mindbot:mindbot@127.0.0.1:5432/mindbot}"
CLUSTER_DB_URL="${MINDBOT_CLUSTER_DATABASE_URL:-${DATABASE_URL%/*}/mindbot_cluster}"
BIN="${MINDBOT_AGENT_BIN:-${CARGO_TARGET_DIR:-$TOOLS/target}/debug/mindbot-agent}"
LB_PORT=$((BASE + 1))
PG_PROXY_PORT=$((BASE + 3))
CUT_SECONDS="${MINDBOT_CLUSTER_CUT_SECONDS:-20}"
API_PORT=$((BASE + 30))
# The public API's user tokens (HS256): a key of this cluster's own, kept in its state dir.
JWT_ISSUER="mindbot-cluster"
JWT_AUDIENCE="mindbot-cluster"

[ "$NODES" -ge 1 ] && [ "$NODES" -le 2 ] || die "MINDBOT_CLUSTER_NODES must be 1 or 2 (got $NODES)"
[ "$WORKERS" -ge 1 ] && [ "$WORKERS" -le 9 ] || die "MINDBOT_CLUSTER_WORKERS must be 1..9 (got $WORKERS)"
[[ "$LIVEKIT_GOGC" =~ ^([0-9]+|off)$ ]] || die "MINDBOT_LIVEKIT_GOGC must be a percentage or off (got $LIVEKIT_GOGC)"
[[ "$LIVEKIT_NICE" =~ ^-?[0-9]+$ ]] && [ "$LIVEKIT_NICE" -ge -20 ] && [ "$LIVEKIT_NICE" -le 19 ] \
    || die "MINDBOT_LIVEKIT_NICE must be -20..19 (got $LIVEKIT_NICE)"
[ "$BASE" -ge 1024 ] && [ "$BASE" -le 65400 ] || die "MINDBOT_CLUSTER_PORT_BASE must be 1024..65400 (got $BASE)"

node_port() { echo $((BASE + 10 * $1)); }

start_redis() {
    mkdir -p "$DIR/redis"
    port_answers "$BASE" && die "port $BASE (Redis) is taken: stop the cluster or pick MINDBOT_CLUSTER_PORT_BASE"
    command -v redis-server >/dev/null || die "redis-server not found: run scripts/deps.sh"
    spawn_daemon redis "$DIR/redis" "$BASE" redis-server --bind 127.0.0.1 --port "$BASE" \
        --save "" --appendonly no --dir "$DIR/redis" --protected-mode yes
}

start_node() {
    local n="$1" port d
    port="$(node_port "$n")"
    d="$DIR/livekit-$n"
    mkdir -p "$d"
    cat > "$d/livekit.yaml" <<YAML
port: $port
bind_addresses: ["127.0.0.1"]
# Multi-node mode: rooms are placed on nodes and signals relayed through Redis.
redis:
  address: 127.0.0.1:$BASE
rtc:
  tcp_port: $((port + 1))
  udp_port: $((port + 2))
  use_external_ip: false
  node_ip: 127.0.0.1
keys:
  $KEY: $SECRET
logging:
  level: ${MINDBOT_LIVEKIT_LOG_LEVEL:-info}
YAML
    # The SFU is served first and its garbage collector given room: on cores
    # it shares, LiveKit's collector otherwise runs short of CPU and makes the
    # forwarding goroutines do its marking, so for about a second per cycle
    # (every 20 s under 300 sessions at Go's default GOGC=100) audio stops
    # being forwarded; a user who leaves then loses the audio still queued,
    # and the agent dates their leave by the audio that came before (README,
    # "Where the remaining shorts come from"). A negative nice needs root;
    # without it nice warns and LiveKit runs at the default priority.
    spawn_daemon "livekit node $n" "$d" "$port" env GOGC="$LIVEKIT_GOGC" \
        nice -n "$LIVEKIT_NICE" "$CACHE/livekit/bin/server" --config "$d/livekit.yaml"
}

start_haproxy() {
    local d="$DIR/haproxy" n servers=""
    mkdir -p "$d"
    command -v haproxy >/dev/null || die "haproxy not found: run scripts/deps.sh"
    for n in $(seq 1 "$NODES"); do
        servers+="    server node$n 127.0.0.1:$(node_port "$n") check inter 1s fall 2 rise 1"$'\n'
    done
    cat > "$d/haproxy.cfg" <<CFG
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # WebSockets (signal connections) stay open for a session's life.
    timeout tunnel 2h
    option http-server-close
    # A connection a node refuses (it is going down, before the health
    # check has noticed) is tried again on another node.
    retries 3
    option redispatch
frontend livekit
    bind 127.0.0.1:$LB_PORT
    default_backend livekit_nodes
backend livekit_nodes
    balance leastconn
    # A node answers "OK" on / while it serves.
    option httpchk GET /
    http-check expect status 200
$servers
frontend stats
    bind 127.0.0.1:$((BASE + 2))
    stats enable
    stats uri /stats
CFG
    haproxy -c -q -f "$d/haproxy.cfg" || die "haproxy refused $d/haproxy.cfg"
    spawn_daemon haproxy "$d" "$LB_PORT" haproxy -db -f "$d/haproxy.cfg"
}

# PostgreSQL's host:port, from the cluster database's URL.
pg_address() {
    local rest="${CLUSTER_DB_URL#*@}"
    rest="${rest%%/*}"
    case "$rest" in *:*) echo "$rest" ;; *) echo "$rest:5432" ;; esac
}

# The cluster database's URL through the proxy.
proxied_db_url() {
    local head="${CLUSTER_DB_URL%%@*}" tail="${CLUSTER_DB_URL#*@}"
    echo "$head@127.0.0.1:$PG_PROXY_PORT/${tail#*/}"
}

start_pg_proxy() {
    local d="$DIR/pgproxy"
    mkdir -p "$d"
    cat > "$d/haproxy.cfg" <<CFG
global
    maxconn 1024
defaults
    mode tcp
    timeout connect 2s
    # Pooled connections sit idle between batches.
    timeout client 1h
    timeout server 1h
frontend postgres
    bind 127.0.0.1:$PG_PROXY_PORT
    default_backend postgres
backend postgres
    server db $(pg_address)
CFG
    haproxy -c -q -f "$d/haproxy.cfg" || die "haproxy refused $d/haproxy.cfg"
    spawn_daemon "the PostgreSQL proxy" "$d" "$PG_PROXY_PORT" haproxy -db -f "$d/haproxy.cfg"
}

# The environment every mindbot-agent process of the cluster runs with.
agent_env() {
    DATABASE_URL="$(proxied_db_url)"
    export DATABASE_URL
    export LIVEKIT_URL="ws://127.0.0.1:$LB_PORT" LIVEKIT_API_KEY="$KEY" LIVEKIT_API_SECRET="$SECRET"
    export MINDBOT_DATABASE_MIGRATE_ON_START=false
    export MINDBOT_WORKER_DRAIN_TIMEOUT_SECONDS="$DRAIN"
    # Sized so that two of the three workers carry a 300-session load when
    # one is killed or draining (at 150 they filled up and declined jobs).
    export MINDBOT_WORKER_MAX_JOBS="${MINDBOT_WORKER_MAX_JOBS:-250}"
    export MINDBOT_HTTP_WEB_ROOT=""
    # The users play a tone, not speech: no voice providers unless asked for.
    export MINDBOT_VOICE_ENABLED="${MINDBOT_VOICE_ENABLED:-false}"
    export MINDBOT_API_JWT_KEY MINDBOT_API_JWT_ISSUER="$JWT_ISSUER" MINDBOT_API_JWT_AUDIENCE="$JWT_AUDIENCE"
    MINDBOT_API_JWT_KEY="$(cat "$DIR/jwt.key")"
    # One load generator calls the API from one address.
    export MINDBOT_API_RATE_LIMIT_PER_SECOND="${MINDBOT_API_RATE_LIMIT_PER_SECOND:-1000}"
    export MINDBOT_API_RATE_LIMIT_BURST="${MINDBOT_API_RATE_LIMIT_BURST:-1000}"
    export MINDBOT_API_MAX_CONCURRENT_REQUESTS="${MINDBOT_API_MAX_CONCURRENT_REQUESTS:-128}"
}

database() {
    bash "$ROOT/scripts/postgres.sh"
    command -v psql >/dev/null || die "psql not found: run scripts/postgres.sh"
    local db="${CLUSTER_DB_URL##*/}"
    db="${db%%\?*}"
    if [ "$(psql "${CLUSTER_DB_URL%/*}/postgres" -qtAX -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
        log "creating database $db"
        psql "${CLUSTER_DB_URL%/*}/postgres" -qtAX -c "CREATE DATABASE \"$db\"" >/dev/null
    fi
    (agent_env && DATABASE_URL="$CLUSTER_DB_URL" "$BIN" migrate >"$DIR/migrate.log" 2>&1) || { tail -n 20 "$DIR/migrate.log" >&2; die "migrations failed"; }
}

start_agents() {
    mkdir -p "$DIR/api"
    (
        agent_env
        export MINDBOT_API_ENABLED=true MINDBOT_HTTP_ADDRESS="127.0.0.1:$API_PORT"
        spawn_daemon "the public API" "$DIR/api" "$API_PORT" "$BIN" api
    )
    local w
    for w in $(seq 1 "$WORKERS"); do
        start_worker "$w"
    done
}

start_worker() {
    local w="$1"
    mkdir -p "$DIR/worker-$w"
    (
        agent_env
        export MINDBOT_API_ENABLED=false MINDBOT_HTTP_ADDRESS="127.0.0.1:$((API_PORT + w))"
        spawn_daemon "worker $w" "$DIR/worker-$w" "$((API_PORT + w))" "$BIN" run
    )
}

alive() { [ -f "$1/server.pid" ] && kill -0 "$(cat "$1/server.pid")" 2>/dev/null; }

start() {
    [ -x "$BIN" ] || die "no mindbot-agent at $BIN: run cargo build (or set MINDBOT_AGENT_BIN)"
    bash "$ROOT/scripts/livekit-server.sh" install
    mkdir -p "$DIR"
    alive "$DIR/redis" && die "the cluster in $DIR runs already (scripts/cluster.sh stop)"
    [ -s "$DIR/jwt.key" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/jwt.key"
    database
    log "starting Redis on $BASE"
    start_redis
    for n in $(seq 1 "$NODES"); do
        log "starting LiveKit node $n on $(node_port "$n")"
        start_node "$n"
    done
    log "starting HAProxy on $LB_PORT"
    start_haproxy
    log "starting the PostgreSQL proxy on $PG_PROXY_PORT (to $(pg_address))"
    start_pg_proxy
    log "starting the API on $API_PORT and $WORKERS workers"
    start_agents
    # What the load generator and the tests read: where everything is.
    cat > "$DIR/cluster.env" <<ENV
LIVEKIT_URL=ws://127.0.0.1:$LB_PORT
DATABASE_URL=$CLUSTER_DB_URL
MINDBOT_CLUSTER_API_URL=http://127.0.0.1:$API_PORT
MINDBOT_API_JWT_ISSUER=$JWT_ISSUER
MINDBOT_API_JWT_AUDIENCE=$JWT_AUDIENCE
MINDBOT_CLUSTER_DIR=$DIR
MINDBOT_CLUSTER_PORT_BASE=$BASE
MINDBOT_CLUSTER_NODES=$NODES
MINDBOT_CLUSTER_WORKERS=$WORKERS
MINDBOT_WORKER_DRAIN_TIMEOUT_SECONDS=$DRAIN
ENV
    : > "$DIR/faults.log"
    status
}

# SIGTERM, then wait up to $2 seconds for the process to go; a second SIGTERM after that.
stop_wait() {
    local d="$1" limit="$2" pid
    [ -f "$d/server.pid" ] || return 0
    pid="$(cat "$d/server.pid")"
    kill "$pid" 2>/dev/null || { rm -f "$d/server.pid"; return 0; }
    for _ in $(seq 1 $((limit * 10))); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$d/server.pid"; return 0; }
        sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    sleep 1
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$d/server.pid"
}

stop() {
    local d
    for d in "$DIR"/worker-* "$DIR/api"; do
        [ -d "$d" ] && stop_wait "$d" 30 &
    done
    wait
    for d in "$DIR/haproxy" "$DIR"/livekit-* "$DIR/redis" "$DIR/pgproxy"; do
        [ -d "$d" ] && stop_wait "$d" 10
    done
    log "stopped (logs stay in $DIR)"
}

status() {
    local d name port ok=0
    for d in "$DIR/redis" "$DIR"/livekit-* "$DIR/haproxy" "$DIR/pgproxy" "$DIR/api" "$DIR"/worker-*; do
        [ -d "$d" ] || continue
        name="$(basename "$d")"
        if alive "$d"; then
            printf '%-10s running (pid %s)\n' "$name" "$(cat "$d/server.pid")"
        else
            printf '%-10s stopped\n' "$name"
            ok=1
        fi
    done
    port="$LB_PORT"
    port_answers "$port" && echo "LiveKit through HAProxy: ws://127.0.0.1:$port" || ok=1
    return $ok
}

# ---- faults ---------------------------------------------------------------

fault_log() { echo "$(date +%s%3N) $*" >> "$DIR/faults.log"; }

# The worker id (mindbot-<12 hex>) worker $1 registered with, from its log.
worker_id() { grep -o 'mindbot-[0-9a-f]\{12\}' "$DIR/worker-$1/server.log" 2>/dev/null | head -n 1 || true; }

# The running worker with the most active sessions (the database knows whose they are).
busiest_worker() {
    local w id n best=1 most=-1
    for w in $(seq 1 "$WORKERS"); do
        alive "$DIR/worker-$w" || continue
        id="$(worker_id "$w")"
        n="$(psql "$CLUSTER_DB_URL" -qtAX -c \
            "SELECT count(*) FROM voice_sessions WHERE status = 'active' AND worker_id = '$id'")"
        if [ "$n" -gt "$most" ]; then best="$w" most="$n"; fi
    done
    echo "$best"
}

ready() { curl -sf -o /dev/null "http://127.0.0.1:$((API_PORT + $1))/readyz"; }

fault_kill_worker() {
    local w id
    w="$(busiest_worker)"
    alive "$DIR/worker-$w" || die "no worker is running"
    id="$(worker_id "$w")"
    fault_log start kill-worker "worker-$w" "$id"
    kill -9 "$(cat "$DIR/worker-$w/server.pid")"
    rm -f "$DIR/worker-$w/server.pid"
    fault_log end kill-worker "worker-$w" "$id"
}

fault_stop_node() {
    alive "$DIR/livekit-1" || die "LiveKit node 1 is not running"
    fault_log start stop-node livekit-1
    stop_wait "$DIR/livekit-1" 10
    fault_log end stop-node livekit-1
}

fault_restart_redis() {
    alive "$DIR/redis" || die "Redis is not running"
    fault_log start restart-redis redis
    stop_wait "$DIR/redis" 10
    start_redis
    fault_log end restart-redis redis
}

fault_restart_postgres() {
    local data="$CACHE/postgres/data" bin
    [ -f "$data/postmaster.pid" ] || die "restart-postgres restarts only the project-local server ($data is not running)"
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    fault_log start restart-postgres postgresql
    runuser -u postgres -- "$bin/pg_ctl" -D "$data" -l "$CACHE/postgres/server.log" -w -t 60 restart -m fast >/dev/null \
        || die "pg_ctl restart failed (log: $CACHE/postgres/server.log)"
    fault_log end restart-postgres postgresql
}

fault_cut_postgres() {
    alive "$DIR/pgproxy" || die "the PostgreSQL proxy is not running"
    fault_log start cut-postgres pgproxy
    stop_wait "$DIR/pgproxy" 5
    sleep "$CUT_SECONDS"
    start_pg_proxy
    fault_log end cut-postgres pgproxy
}

fault_rolling_deploy() {
    local w id new
    fault_log start rolling-deploy workers
    for w in $(seq 1 "$WORKERS"); do
        alive "$DIR/worker-$w" || continue
        id="$(worker_id "$w")"
        fault_log sigterm rolling-deploy "worker-$w" "$id"
        # The drain timeout, and some time to close the sessions it ended.
        stop_wait "$DIR/worker-$w" $((DRAIN + 15))
        fault_log exited rolling-deploy "worker-$w" "$id"
        mv -f "$DIR/worker-$w/server.log" "$DIR/worker-$w/server.log.$id"
        start_worker "$w"
        for _ in $(seq 1 600); do ready "$w" && break; sleep 0.1; done
        ready "$w" || die "worker $w was not ready within 60 s of its restart"
        for _ in $(seq 1 50); do new="$(worker_id "$w")"; [ -n "$new" ] && break; sleep 0.1; done
        fault_log ready rolling-deploy "worker-$w" "$new"
    done
    fault_log end rolling-deploy workers
}

fault() {
    [ -f "$DIR/cluster.env" ] || die "no cluster in $DIR (scripts/cluster.sh start)"
    case "${1:-}" in
        kill-worker) fault_kill_worker ;;
        stop-node) fault_stop_node ;;
        restart-redis) fault_restart_redis ;;
        restart-postgres) fault_restart_postgres ;;
        cut-postgres) fault_cut_postgres ;;
        rolling-deploy) fault_rolling_deploy ;;
        *) die "unknown fault '${1:-}': kill-worker, stop-node, restart-redis, restart-postgres, cut-postgres or rolling-deploy" ;;
    esac
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    fault) fault "${2:-}" ;;
    *) die "usage: $0 start|stop|status|fault NAME" ;;
esac
