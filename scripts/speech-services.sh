#!/usr/bin/env bash
# Start (once) the test speech services of tests/speech/server.py: text to
# speech over espeak-ng, speech to text over PocketSphinx and a deterministic
# chat responder, all on the OpenAI-compatible HTTP APIs.
#
#   scripts/speech-services.sh start   start on 127.0.0.1:$MINDBOT_SPEECH_PORT (7890)
#                                      unless something answers there already
#   scripts/speech-services.sh stop
#
# Needs espeak-ng (scripts/deps.sh) and the Python venv (scripts/python-env.sh),
# which it makes sure of.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PORT="${MINDBOT_SPEECH_PORT:-7890}"
DIR="$CACHE/speech"
mkdir -p "$DIR"

answers() { port_answers "$PORT"; }

start() {
    # One starter at a time (tests may call this concurrently).
    exec 9>"$DIR/.start.lock"
    flock 9
    if answers; then
        return
    fi
    command -v espeak-ng >/dev/null || bash "$ROOT/scripts/deps.sh"
    bash "$ROOT/scripts/python-env.sh"
    log "starting the speech services on 127.0.0.1:$PORT"
    spawn_daemon "the speech services" "$DIR" "$PORT" "$CACHE/venv/bin/python" "$ROOT/tests/speech/server.py" --port "$PORT"
}

stop() { stop_daemon "$DIR"; }

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    *) die "usage: $0 start|stop" ;;
esac
