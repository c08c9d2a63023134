#!/usr/bin/env bash
# Make sure a PostgreSQL server answers at DATABASE_URL.
#
# If something already answers there, it is used as it is. Otherwise the
# Debian package is installed when missing, and a project-local cluster is
# created under .cache/postgres (owned by the `postgres` system user) and
# started on the URL's host and port, with the URL's role (CREATEDB, so tests
# can make a database each) and database. Idempotent; safe to run repeatedly.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DATABASE_URL="${DATABASE_URL:-postgres://mindbot:mindbot@127.0.0.1:5432/mindbot}"
# postgres://user:password@host:port/dbname
re='^postgres(ql)?://([^:@/]+)(:([^@/]*))?@([^:/]+)(:([0-9]+))?/([^?]+)'
[[ "$DATABASE_URL" =~ $re ]] || die "DATABASE_URL is not postgres://user:password@host:port/db"
PG_USER="${BASH_REMATCH[2]}"; PG_PASS="${BASH_REMATCH[4]}"; PG_HOST="${BASH_REMATCH[5]}"
PG_PORT="${BASH_REMATCH[7]:-5432}"; PG_DB="${BASH_REMATCH[8]}"

answers() { command -v pg_isready >/dev/null && pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2; }

pg_bin() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

if answers; then
    log "PostgreSQL answers at $PG_HOST:$PG_PORT; using it"
else
    if [ -z "$(pg_bin)" ]; then
        log "installing PostgreSQL from the distribution's packages"
        apt_install postgresql postgresql-contrib
    fi
    BIN="$(pg_bin)" || die "no initdb found after installing postgresql"
    DATA="$CACHE/postgres/data"
    as_pg() { runuser -u postgres -- "$@"; }
    if [ "$(id -u)" != 0 ]; then as_pg() { "$@"; }; fi
    if [ ! -f "$DATA/PG_VERSION" ]; then
        log "creating a local cluster in $DATA"
        mkdir -p "$DATA"
        [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$CACHE/postgres"
        as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 >/dev/null
        cat >> "$DATA/postgresql.conf" <<CONF
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$CACHE/postgres'
max_connections = 300
shared_buffers = 256MB
log_min_messages = warning
CONF
    fi
    log "starting the local cluster on $PG_HOST:$PG_PORT"
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$CACHE/postgres/server.log" -w -t 60 start >/dev/null \
        || { tail -n 20 "$CACHE/postgres/server.log" >&2; die "PostgreSQL did not start"; }
    psql_su() { as_pg psql -h "$CACHE/postgres" -p "$PG_PORT" -U postgres -d postgres -qtAX "$@"; }
    if [ "$(psql_su -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" != 1 ]; then
        psql_su -c "CREATE ROLE \"$PG_USER\" LOGIN CREATEDB PASSWORD '$PG_PASS'"
    fi
    if [ "$(psql_su -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]; then
        psql_su -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\""
    fi
fi
answers || die "PostgreSQL does not answer at $PG_HOST:$PG_PORT"
