#!/usr/bin/env bash
# Set up and run the worker with the defaults in config.toml: installs what
# is missing, starts a local PostgreSQL and LiveKit server (dev mode) and the
# local voice stack (scripts/local-voice.sh: a language model, speech to text
# and text to speech) when nothing answers at the configured addresses
# (MINDBOT_VOICE_ENABLED=false skips the voice stack), builds the release binary,
# applies the migrations, prints a demo user's room and token (a funded
# demo user; the token dispatches the agent), and runs `mindbot-agent run`.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

export DATABASE_URL="${DATABASE_URL:-postgres://mindbot:mindbot@127.0.0.1:5432/mindbot}"
export LIVEKIT_URL="${LIVEKIT_URL:-ws://127.0.0.1:7880}"

bash scripts/deps.sh
bash scripts/postgres.sh
bash scripts/livekit-server.sh start
cargo build --release --locked -p mindbot-agent
BIN="$ROOT/target/release/mindbot-agent"
"$BIN" --config "$ROOT/config.toml" migrate
bash scripts/python-env.sh
if [ "${MINDBOT_VOICE_ENABLED:-true}" != "false" ]; then
    bash scripts/local-voice.sh start
fi
"$BIN" --config "$ROOT/config.toml" demo
exec "$BIN" --config "$ROOT/config.toml" run
