#!/usr/bin/env python3
"""Speech services for the tests, speaking the OpenAI-compatible HTTP APIs the
agent's voice pipeline uses, over real engines:

  POST /v1/audio/speech          espeak-ng; JSON {model, input, voice,
                                 response_format: "pcm" (24 kHz s16le mono) | "wav"}
  POST /v1/audio/transcriptions  PocketSphinx (English model); multipart with a
                                 WAV `file` and `model`; answers {"text": ...}
  POST /v1/chat/completions      a deterministic responder (no model can be
                                 downloaded here): it answers from the system
                                 prompt it received ("My name is <the name after
                                 'You are'>. ..."), calls the get_balance tool
                                 when asked about the balance and tools offer it,
                                 and streams as server-sent events when asked.
  POST /control                  {"fail": {"stage": "tts"|"stt"|"llm", "times": N,
                                 "status": 500}}: the next N requests of that stage fail;
                                 {"reset": true} also forgets what /inspect reports
  GET  /usage                    what this process has served, as a provider bills
                                 it: {"stt_audio_ms", "llm_prompt_tokens",
                                 "llm_completion_tokens" (as reported in `usage`),
                                 "tts_characters"}
  GET  /inspect                  what the chat endpoint was offered, request by request,
                                 and what the recogniser heard:
                                 {"llm": [{"tools": [names], "persona": name}], "stt": [text]}
  GET  /healthz

Usage: server.py --port 7890 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import threading
import time
import wave
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np

import speech

# The HTTP plumbing is the local voice stack's (voice/local/service.py).
sys.path.append(str(Path(__file__).resolve().parents[2] / "voice" / "local"))
from service import ServiceHandler, multipart_field, wav_bytes  # noqa: E402

SPEECH_RATE = 24000  # OpenAI's "pcm" format
FAILS: dict = {}
FAILS_LOCK = threading.Lock()
KNOWN_VOICES: set = set()
USAGE = {"stt_audio_ms": 0, "llm_prompt_tokens": 0, "llm_completion_tokens": 0, "tts_characters": 0}
USAGE_LOCK = threading.Lock()


def count(**amounts: int) -> None:
    with USAGE_LOCK:
        for k, v in amounts.items():
            USAGE[k] += v


OFFERED: list = []  # per chat request: the tool names offered and the persona's name
HEARD: list = []  # per transcription request: the text answered

REPLY_TAIL = ("I heard your question. Let me think about it for a moment. "
              "Here is the first thing I would say. Then we can go on step by step, "
              "and you can stop me at any time.")


def reply(name: str) -> str:
    # The name twice: once first, once last, so a listener hears it.
    return f"My name is {name}. {REPLY_TAIL} Again, my name is {name}."


def persona_name(system: str) -> str:
    m = re.search(r"You are ([^,.\n]+)", system)
    return m.group(1).strip() if m else "your assistant"


def take_failure(stage: str):
    with FAILS_LOCK:
        f = FAILS.get(stage)
        if not f or f["times"] <= 0:
            return None
        f["times"] -= 1
        return f.get("status", 500)


def respond(body: dict) -> dict:
    """The responder's answer: {"content": str} or {"tool_call": {...}}."""
    messages = body.get("messages", [])
    system = next((m.get("content", "") for m in messages if m.get("role") == "system"), "")
    name = persona_name(system)
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        try:
            result = json.loads(last.get("content") or "{}")
            minutes = int(result.get("remaining_seconds", 0)) // 60
            return {"content": f"You have about {minutes} minutes left."}
        except (ValueError, TypeError):
            return {"content": "I could not read your balance."}
    tools = {t.get("function", {}).get("name") for t in body.get("tools") or []}
    user = str(last.get("content", "")).lower() if last.get("role") == "user" else ""
    if "balance" in user and "get_balance" in tools:
        return {"tool_call": {"id": f"call_{int(time.time() * 1000)}", "type": "function",
                              "function": {"name": "get_balance", "arguments": "{}"}}}
    return {"content": reply(name)}


class Handler(ServiceHandler):
    def body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def error_type(self, status: int) -> str:
        return "test_service"

    def do_GET(self):
        if self.path == "/healthz":
            self.send(200, b'{"ok": true}')
        elif self.path == "/usage":
            with USAGE_LOCK:
                self.send(200, json.dumps(USAGE).encode())
        elif self.path == "/inspect":
            with FAILS_LOCK:
                self.send(200, json.dumps({"llm": list(OFFERED), "stt": list(HEARD)}).encode())
        else:
            self.error(404, "not found")

    def do_POST(self):
        raw = self.body()
        try:
            if self.path == "/control":
                cmd = json.loads(raw or b"{}")
                with FAILS_LOCK:
                    if "fail" in cmd:
                        FAILS[cmd["fail"]["stage"]] = dict(cmd["fail"])
                    if cmd.get("reset"):
                        FAILS.clear()
                        OFFERED.clear()
                        HEARD.clear()
                return self.send(200, b'{"ok": true}')
            stage = {"/v1/audio/speech": "tts", "/v1/audio/transcriptions": "stt",
                     "/v1/chat/completions": "llm"}.get(self.path)
            if stage is None:
                return self.error(404, f"no such endpoint {self.path}")
            status = take_failure(stage)
            if status:
                return self.error(status, f"injected {stage} failure")
            getattr(self, stage)(raw)
        except (ValueError, KeyError) as e:
            self.error(400, f"bad request: {e}")

    def tts(self, raw: bytes) -> None:
        req = json.loads(raw)
        text = req["input"]
        voice = req.get("voice") or "en-us"
        if voice not in KNOWN_VOICES and voice.split("+")[0] not in KNOWN_VOICES:
            voice = "en-us"
        pcm = speech.synthesise(text, voice=voice, rate=SPEECH_RATE, speed=int(req.get("speed_wpm", 130)))
        fmt = req.get("response_format", "pcm")
        if fmt in ("pcm", "wav"):
            count(tts_characters=len(text))
        if fmt == "pcm":
            return self.send(200, pcm.tobytes(), "audio/pcm")
        if fmt == "wav":
            return self.send(200, wav_bytes(pcm.tobytes(), SPEECH_RATE), "audio/wav")
        self.error(400, f"response_format {fmt!r} is not supported (pcm, wav)")

    def stt(self, raw: bytes) -> None:
        ctype = self.headers.get("Content-Type", "")
        audio = multipart_field(ctype, raw, "file")
        if audio is None:
            return self.error(400, "multipart field 'file' is missing")
        with wave.open(io.BytesIO(audio)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        text = speech.transcribe(pcm, rate)
        count(stt_audio_ms=len(pcm) * 1000 // rate)
        with FAILS_LOCK:
            HEARD.append(text)
        self.send(200, json.dumps({"text": text, "duration": len(pcm) / rate}).encode())

    def llm(self, raw: bytes) -> None:
        req = json.loads(raw)
        system = next((m.get("content", "") for m in req.get("messages", []) if m.get("role") == "system"), "")
        with FAILS_LOCK:
            OFFERED.append({"tools": [t.get("function", {}).get("name") for t in req.get("tools") or []],
                            "persona": persona_name(system)})
        answer = respond(req)
        model = req.get("model", "responder")
        words = len(json.dumps(req.get("messages", []))) // 4
        if not req.get("stream"):
            msg = {"role": "assistant", "content": answer.get("content")}
            if "tool_call" in answer:
                msg["tool_calls"] = [answer["tool_call"]]
            out = {"id": "chatcmpl-test", "object": "chat.completion", "model": model,
                   "choices": [{"index": 0, "message": msg,
                                "finish_reason": "tool_calls" if "tool_call" in answer else "stop"}],
                   "usage": {"prompt_tokens": words, "completion_tokens": 10, "total_tokens": words + 10}}
            return self.send(200, json.dumps(out).encode())
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def event(delta: dict, finish=None, usage=None) -> None:
            chunk = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage:
                chunk["usage"] = usage
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()

        completion = 0
        if "tool_call" in answer:
            call = dict(answer["tool_call"], index=0)
            event({"role": "assistant", "tool_calls": [call]})
            finish = "tool_calls"
            completion = 5
        else:
            event({"role": "assistant", "content": ""})
            # word by word, as a model writes, so the first sentence can be
            # spoken before the rest has come
            for word in re.findall(r"\S+\s*", answer["content"]):
                time.sleep(0.01)
                event({"content": word})
                completion += 1
            finish = "stop"
        event({}, finish)
        if (req.get("stream_options") or {}).get("include_usage"):
            chunk = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": model, "choices": [],
                     "usage": {"prompt_tokens": words, "completion_tokens": completion,
                               "total_tokens": words + completion}}
            count(llm_prompt_tokens=words, llm_completion_tokens=completion)
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7890)
    args = p.parse_args()
    KNOWN_VOICES.update(speech.espeak_voices())
    speech.transcribe(np.zeros(1600, np.int16), 16000)  # load the model now, not on the first turn
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"speech services on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
