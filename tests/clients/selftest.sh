#!/usr/bin/env bash
# Self-test of the end-user clients against a real LiveKit server, Python to
# Python (no agent involved):
#   1. alice publishes 440 Hz, bob publishes 660 Hz; each records the other and
#      must measure the right tone (within 10 Hz) at a sane level; each sends a
#      reliable data packet on its own topic and the other must get it, with the
#      sender's identity; bob watches alice (attributes, join, leave).
#   2. room_admin.py remove-participant: the removed client reports
#      PARTICIPANT_REMOVED; delete-room: the client in it reports ROOM_DELETED.
#   3. room_admin.py create-token --agent-dispatch: the token carries the room
#      configuration and the server accepts it; error cases exit non-zero with
#      {"error": ...}.
# Starts the server with scripts/livekit-server.sh (and stops it at the end if
# it started it). Rooms are named selftest-<pid>-*, so a shared server is fine.
# Exits non-zero on the first failed check. Takes about 20 s.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/../../scripts/lib.sh"

bash "$ROOT/scripts/python-env.sh"
PY="$CACHE/venv/bin/python"
export LIVEKIT_URL="${LIVEKIT_URL:-ws://127.0.0.1:7880}"
export LIVEKIT_API_KEY="${LIVEKIT_API_KEY:-devkey}" LIVEKIT_API_SECRET="${LIVEKIT_API_SECRET:-secret}"

OUT="$(mktemp -d)"
started_server=""
LK_PORT="$(printf '%s' "$LIVEKIT_URL" | sed -E 's#^[a-z]+://[^:/]+:?([0-9]*).*#\1#')"
if ! (exec 3<>"/dev/tcp/127.0.0.1/${LK_PORT:-7880}") 2>/dev/null; then
    started_server=1
fi
cleanup() {
    local pids
    pids="$(jobs -p)"
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
    [ -n "$started_server" ] && bash "$ROOT/scripts/livekit-server.sh" stop
    rm -rf "$OUT"
}
trap cleanup EXIT
bash "$ROOT/scripts/livekit-server.sh" start

PART="$HERE/participant.py"
ADMIN="$HERE/room_admin.py"
R="selftest-$$"
passed=0
failed=0

# check NAME FILE EXPR: EXPR is a Python expression over r, the JSON in FILE.
check() {
    if "$PY" - "$2" "$3" <<'PYEOF'
import json, sys
path, expr = sys.argv[1], sys.argv[2]
try:
    with open(path) as f:
        r = json.loads(f.read().strip().splitlines()[-1])
except Exception as e:
    print(f"    cannot read the JSON in {path}: {e}", file=sys.stderr)
    sys.exit(1)
try:
    ok = eval("(" + expr + ")", {"r": r, "abs": abs})
except Exception as e:
    ok = False
    print(f"    {type(e).__name__}: {e}", file=sys.stderr)
if not ok:
    print(f"    expected: {expr}\n    got: {json.dumps(r)[:1500]}", file=sys.stderr)
sys.exit(0 if ok else 1)
PYEOF
    then
        log "ok: $1"; passed=$((passed + 1))
    else
        log "FAILED: $1"; failed=$((failed + 1))
    fi
}

t0=$SECONDS

log "pair: tones and data both ways in room $R-pair"
"$PY" "$PART" --room "$R-pair" --identity alice --attribute role=caller \
    --publish-tone 440 --record-seconds 4 --wait-for bob --send-delay 0.5 \
    --send-data chat:hello-from-alice --send-text notes:hello-as-a-stream --expect-data reply --stay 5 \
    >"$OUT/alice.json" 2>"$OUT/alice.log" &
alice=$!
"$PY" "$PART" --room "$R-pair" --identity bob \
    --publish-tone 660 --record-seconds 4 --wait-for alice --send-delay 0.5 \
    --send-data reply:hello-from-bob --expect-data chat --text-topic notes --watch-identity alice --stay 7 \
    >"$OUT/bob.json" 2>"$OUT/bob.log" &
bob=$!
wait $alice || log "alice exited $?"
wait $bob || log "bob exited $?"

check "alice joined and saw bob" "$OUT/alice.json" \
    'r["joined"] and "bob" in r["participants_seen"] and r["waited_for"] == {"bob": True}'
check "bob hears 440 Hz from alice" "$OUT/bob.json" \
    'abs(r["audio"]["alice"]["frequency_hz"] - 440) <= 10'
check "alice hears 660 Hz from bob" "$OUT/alice.json" \
    'abs(r["audio"]["bob"]["frequency_hz"] - 660) <= 10'
# a 0.3 sine is -13.5 dBFS; Opus keeps it within a few dB
check "bob's level of alice is sane (-20..-8 dBFS) for 3+ s" "$OUT/bob.json" \
    '-20 <= r["audio"]["alice"]["rms_dbfs"] <= -8 and r["audio"]["alice"]["seconds"] >= 3'
check "alice's level of bob is sane (-20..-8 dBFS) for 3+ s" "$OUT/alice.json" \
    '-20 <= r["audio"]["bob"]["rms_dbfs"] <= -8 and r["audio"]["bob"]["seconds"] >= 3'
check "bob got alice's data on topic chat" "$OUT/bob.json" \
    '[(d["topic"], d["from"], d["text"]) for d in r["data"]] == [("chat", "alice", "hello-from-alice")]'
check "alice got bob's data on topic reply" "$OUT/alice.json" \
    '[(d["topic"], d["from"], d["text"]) for d in r["data"]] == [("reply", "bob", "hello-from-bob")]'
check "bob got alice's text stream on topic notes" "$OUT/bob.json" \
    '[(t["topic"], t["from"], t["text"]) for t in r["texts"]] == [("notes", "alice", "hello-as-a-stream")]'
check "bob watched alice: attributes, joined, left" "$OUT/bob.json" \
    'r["watched"]["attributes"] == {"role": "caller"} and r["watched"]["joined_at"] is not None
     and r["watched"]["left_at"] is not None and r["watched"]["present"] is False
     and r["watched"]["kind"] == "standard"'
check "both left on their own" "$OUT/alice.json" \
    'r["ended"] == "stay_elapsed" and r["disconnect_reason"] == "CLIENT_INITIATED"'

log "server-side removal and room deletion"
"$PY" "$PART" --room "$R-rm" --identity carol --stay 30 >"$OUT/carol.json" 2>"$OUT/carol.log" &
carol=$!
"$PY" "$PART" --room "$R-del" --identity dave --stay 30 >"$OUT/dave.json" 2>"$OUT/dave.log" &
dave=$!
for _ in $(seq 1 100); do
    "$PY" "$ADMIN" list-participants "$R-rm" >"$OUT/list-rm.json" 2>>"$OUT/admin.log" || true
    "$PY" "$ADMIN" list-participants "$R-del" >"$OUT/list-del.json" 2>>"$OUT/admin.log" || true
    grep -q '"identity": "carol"' "$OUT/list-rm.json" && grep -q '"identity": "dave"' "$OUT/list-del.json" && break
    sleep 0.2
done
check "list-participants shows carol" "$OUT/list-rm.json" \
    'r["count"] == 1 and r["participants"][0]["identity"] == "carol"
     and r["participants"][0]["kind"] == "STANDARD"'
"$PY" "$ADMIN" remove-participant "$R-rm" carol >"$OUT/remove.json" 2>>"$OUT/admin.log" || true
"$PY" "$ADMIN" delete-room "$R-del" >"$OUT/delete.json" 2>>"$OUT/admin.log" || true
wait $carol || log "carol exited $?"
wait $dave || log "dave exited $?"
check "remove-participant answered ok" "$OUT/remove.json" 'r.get("ok") is True'
check "delete-room answered ok" "$OUT/delete.json" 'r.get("ok") is True'
check "carol was removed: PARTICIPANT_REMOVED" "$OUT/carol.json" \
    'r["disconnect_reason"] == "PARTICIPANT_REMOVED" and r["ended"] == "disconnected" and r["duration"] < 25'
check "dave's room was deleted: ROOM_DELETED" "$OUT/dave.json" \
    'r["disconnect_reason"] == "ROOM_DELETED" and r["ended"] == "disconnected" and r["duration"] < 25'

log "tokens with agent dispatch, and error cases"
"$PY" "$ADMIN" create-token --room "$R-tok" --identity erin --agent-dispatch mindbot \
    --metadata '{"persona":"test"}' >"$OUT/token.json"
"$PY" - "$OUT/token.json" >"$OUT/claims.json" <<'PYEOF'
import json, sys, warnings
warnings.filterwarnings("ignore", message=".*HMAC key.*")  # the dev secret is short
from livekit import api
r = json.load(open(sys.argv[1]))
claims = api.TokenVerifier().verify(r["token"])
cfg = claims.room_config
print(json.dumps({"identity": claims.identity, "room": claims.video.room,
                  "agents": [{"agent_name": a.agent_name, "metadata": a.metadata}
                             for a in cfg.agents] if cfg else []}))
PYEOF
check "the token dispatches agent mindbot with the metadata" "$OUT/claims.json" \
    'r == {"identity": "erin", "room": "'"$R-tok"'",
           "agents": [{"agent_name": "mindbot", "metadata": "{\"persona\":\"test\"}"}]}'
token="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$OUT/token.json")"
"$PY" "$PART" --token "$token" --stay 1 >"$OUT/erin.json" 2>"$OUT/erin.log" || true
check "the server accepts that token" "$OUT/erin.json" 'r["joined"] and r["identity"] == "erin"'

expect_error() {  # NAME, then the command; it must fail with {"error": ...}
    local name="$1"; shift
    if "$@" >"$OUT/err.json" 2>>"$OUT/admin.log"; then
        log "FAILED: $name (exited 0)"; failed=$((failed + 1)); return
    fi
    check "$name" "$OUT/err.json" 'isinstance(r.get("error"), str) and r["error"] != ""'
}
expect_error "remove-participant of a stranger fails" "$PY" "$ADMIN" remove-participant "$R-rm" nobody
expect_error "delete-room of a missing room fails" "$PY" "$ADMIN" delete-room "$R-none"
expect_error "a wrong secret fails" "$PY" "$ADMIN" --api-secret wrong list-participants "$R-rm"
expect_error "a bad dispatch metadata fails" "$PY" "$ADMIN" create-token --room x --identity y \
    --agent-dispatch a --metadata '{oops'
expect_error "joining with a wrong secret fails" "$PY" "$PART" --room "$R-x" --identity z \
    --api-secret wrong --stay 1

log "selftest took $((SECONDS - t0)) s"
if [ "$failed" -ne 0 ]; then
    for f in "$OUT"/*.log; do log "--- $(basename "$f") (last lines)"; tail -n 15 "$f" >&2; done
fi
echo "selftest: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
