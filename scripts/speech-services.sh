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

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

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
    nohup "$CACHE/venv/bin/python" "$ROOT/tests/speech/server.py" --port "$PORT" \
        >"$DIR/server.log" 2>&1 9>&- &
    echo $! > "$DIR/server.pid"
    for _ in $(seq 1 100); do
        answers && return
        sleep 0.1
    done
    tail -n 20 "$DIR/server.log" >&2
    die "the speech services did not start"
}

stop() {
    if [ -f "$DIR/server.pid" ]; then
        kill "$(cat "$DIR/server.pid")" 2>/dev/null || true
        rm -f "$DIR/server.pid"
    fi
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    *) die "usage: $0 start|stop" ;;
esac
