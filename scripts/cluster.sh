#!/usr/bin/env bash
# A production-shaped cluster on loopback, from real parts:
#
#   scripts/cluster.sh start    Redis, LiveKit nodes sharing it (multi-node mode),
#                               HAProxy in front of the nodes, the public API and
#                               the workers (`mindbot-agent run`), one PostgreSQL
#   scripts/cluster.sh stop     stops them all (workers first, drained briefly)
#   scripts/cluster.sh status   what runs, on which port
#
# Clients and workers reach LiveKit only through HAProxy (ws://127.0.0.1:$BASE+1),
# as they would a load balancer in production. Ports come from BASE..BASE+99
# (MINDBOT_CLUSTER_PORT_BASE, default 7700):
#   BASE      Redis                     BASE+1   HAProxy (signal, WebSocket)
#   BASE+2    HAProxy stats (/stats)    BASE+10n LiveKit node n: signal/HTTP,
#   +1 RTC TCP, +2 RTC UDP (muxed)      BASE+30  the public API (`mindbot-agent api`)
#   BASE+31.. each worker's /metrics, /readyz
# Settings (environment): MINDBOT_CLUSTER_NODES (2), MINDBOT_CLUSTER_WORKERS (3),
# MINDBOT_CLUSTER_DATABASE_URL (default: DATABASE_URL's server, database
# mindbot_cluster, created when missing), MINDBOT_AGENT_BIN (default: the
# debug build in CARGO_TARGET_DIR), MINDBOT_CLUSTER_DIR (state and logs,
# default $CACHE/cluster). Worker settings pass through as MINDBOT_* variables.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BASE="${MINDBOT_CLUSTER_PORT_BASE:-7700}"
NODES="${MINDBOT_CLUSTER_NODES:-2}"
WORKERS="${MINDBOT_CLUSTER_WORKERS:-3}"
DIR="${MINDBOT_CLUSTER_DIR:-$CACHE/cluster}"
KEY="${LIVEKIT_API_KEY:-devkey}"
SECRET="${LIVEKIT_API_SECRET:-secret}"
DATABASE_URL="${DATABASE_URL:-postgres://mindbot:mindbot@127.0.0.1:5432/mindbot}"
CLUSTER_DB_URL="${MINDBOT_CLUSTER_DATABASE_URL:-${DATABASE_URL%/*}/mindbot_cluster}"
BIN="${MINDBOT_AGENT_BIN:-${CARGO_TARGET_DIR:-$TOOLS/target}/debug/mindbot-agent}"
LB_PORT=$((BASE + 1))
API_PORT=$((BASE + 30))
# The public API's user tokens (HS256): a key of this cluster's own, kept in its state dir.
JWT_ISSUER="mindbot-cluster"
JWT_AUDIENCE="mindbot-cluster"

[ "$NODES" -ge 1 ] && [ "$NODES" -le 2 ] || die "MINDBOT_CLUSTER_NODES must be 1 or 2 (got $NODES)"
[ "$WORKERS" -ge 1 ] && [ "$WORKERS" -le 9 ] || die "MINDBOT_CLUSTER_WORKERS must be 1..9 (got $WORKERS)"
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
    spawn_daemon "livekit node $n" "$d" "$port" "$CACHE/livekit/bin/server" --config "$d/livekit.yaml"
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

# The environment every mindbot-agent process of the cluster runs with.
agent_env() {
    export DATABASE_URL="$CLUSTER_DB_URL"
    export LIVEKIT_URL="ws://127.0.0.1:$LB_PORT" LIVEKIT_API_KEY="$KEY" LIVEKIT_API_SECRET="$SECRET"
    export MINDBOT_DATABASE_MIGRATE_ON_START=false
    export MINDBOT_WORKER_DRAIN_TIMEOUT_SECONDS="${MINDBOT_WORKER_DRAIN_TIMEOUT_SECONDS:-20}"
    export MINDBOT_WORKER_MAX_JOBS="${MINDBOT_WORKER_MAX_JOBS:-150}"
    export MINDBOT_HTTP_WEB_ROOT=""
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
    (agent_env && "$BIN" migrate >"$DIR/migrate.log" 2>&1) || { tail -n 20 "$DIR/migrate.log" >&2; die "migrations failed"; }
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
        mkdir -p "$DIR/worker-$w"
        (
            agent_env
            export MINDBOT_API_ENABLED=false MINDBOT_HTTP_ADDRESS="127.0.0.1:$((API_PORT + w))"
            spawn_daemon "worker $w" "$DIR/worker-$w" "$((API_PORT + w))" "$BIN" run
        )
    done
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
ENV
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
    for d in "$DIR/haproxy" "$DIR"/livekit-* "$DIR/redis"; do
        [ -d "$d" ] && stop_wait "$d" 10
    done
    log "stopped (logs stay in $DIR)"
}

status() {
    local d name port ok=0
    for d in "$DIR/redis" "$DIR"/livekit-* "$DIR/haproxy" "$DIR/api" "$DIR"/worker-*; do
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

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
