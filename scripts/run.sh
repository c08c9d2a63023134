#!/usr/bin/env bash
# Set up and run the local demo with the defaults in config.toml: installs
# what is missing, starts a local PostgreSQL, LiveKit server (dev mode) and
# the local voice stack (scripts/local-voice.sh: a language model, speech to
# text and text to speech) when nothing answers at the configured addresses,
# builds the release binary and the web app, applies the migrations, prints a
# demo user's room and token, and runs `mindbot-agent run` with the public
# API, the web app at / and the dev sign-in on (loopback only), and voice on
# the local voice stack (MINDBOT_VOICE_ENABLED=false: voice off, no stack).
# Every setting below yields to the environment.
# It ends by printing the page's address: open it, "Dev sign-in", talk.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

export DATABASE_URL="${DATABASE_URL:-postgres://mindbot:mindbot@127.0.0.1:5432/mindbot}"
export LIVEKIT_URL="${LIVEKIT_URL:-ws://127.0.0.1:7880}"
export MINDBOT_API_ENABLED="${MINDBOT_API_ENABLED:-true}"
export MINDBOT_API_DEV_LOGIN="${MINDBOT_API_DEV_LOGIN:-true}"
export MINDBOT_API_JWT_ISSUER="${MINDBOT_API_JWT_ISSUER:-mindbot-local-demo}"
export MINDBOT_API_JWT_AUDIENCE="${MINDBOT_API_JWT_AUDIENCE:-mindbot-web}"
export MINDBOT_VOICE_ENABLED="${MINDBOT_VOICE_ENABLED:-true}"
if [ -z "${MINDBOT_API_JWT_KEY:-}" ]; then
    # A random key of this checkout's own, so demo tokens are worthless elsewhere.
    [ -s "$CACHE/demo-jwt-key" ] || (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$CACHE/demo-jwt-key")
    MINDBOT_API_JWT_KEY="$(cat "$CACHE/demo-jwt-key")"
    export MINDBOT_API_JWT_KEY
fi
ADDRESS="${MINDBOT_HTTP_ADDRESS:-127.0.0.1:9464}"

bash scripts/deps.sh
bash scripts/postgres.sh
bash scripts/livekit-server.sh start
bash scripts/python-env.sh
if [ "$MINDBOT_VOICE_ENABLED" = true ]; then
    bash scripts/python-env.sh voice
    bash scripts/local-voice.sh start
fi
bash scripts/web.sh build
# Built where the tests build (outside the clone), so a second clone reuses it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TOOLS/target}"
cargo build --release --locked -p mindbot-agent
BIN="$CARGO_TARGET_DIR/release/mindbot-agent"
"$BIN" --config "$ROOT/config.toml" migrate
"$BIN" --config "$ROOT/config.toml" demo
log "the web app: open http://$ADDRESS/ and press \"Dev sign-in\""
echo "http://$ADDRESS/"
exec "$BIN" --config "$ROOT/config.toml" run
