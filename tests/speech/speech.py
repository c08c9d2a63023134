"""Real speech for the tests: espeak-ng synthesis and PocketSphinx recognition.

Shared by the speech services (server.py) and the end-user clients, so the
words the user speaks and the words they recognise go through the same
engines as the agent's. All PCM is mono int16 (numpy arrays).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import urllib.request
import uuid
import tempfile
import threading
import time
import wave

import numpy as np

ESPEAK = os.environ.get("MINDBOT_ESPEAK", "espeak-ng")
RECOGNISER_RATE = 16000


def synthesise(text: str, voice: str = "en-us", rate: int = 48000, speed: int = 150) -> np.ndarray:
    """Speak `text` with espeak-ng and return it resampled to `rate`."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run([ESPEAK, "-v", voice, "-s", str(speed), "-w", f.name, "--", text],
                       check=True, capture_output=True)
        with wave.open(f.name) as w:
            native = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return resample(pcm, native, rate)


def espeak_voices() -> set:
    """The voice names espeak-ng knows (languages and their +variants are accepted)."""
    out = subprocess.run([ESPEAK, "--voices"], check=True, capture_output=True, text=True).stdout
    return {line.split()[1] for line in out.splitlines()[1:] if len(line.split()) > 1}


def resample(pcm: np.ndarray, rate: int, to: int) -> np.ndarray:
    """Band-limited resampling through the spectrum (fine for short clips)."""
    if rate == to or len(pcm) == 0:
        return pcm.astype(np.int16)
    n = int(len(pcm) * to / rate)
    spectrum = np.fft.rfft(pcm.astype(np.float64))
    keep = np.zeros(n // 2 + 1, complex)
    k = min(len(keep), len(spectrum))
    keep[:k] = spectrum[:k]
    out = np.fft.irfft(keep, n) * n / len(pcm)
    return np.clip(out, -32768, 32767).astype(np.int16)


_decoder = None
_decoder_lock = threading.Lock()


_apart = None
_apart_lock = threading.Lock()


def transcribe(pcm: np.ndarray, rate: int) -> str:
    """Open-vocabulary transcription with PocketSphinx's English model, in a
    child process of this one that keeps the decoder loaded (loading the
    model costs as much as decoding a sentence), one request at a time.

    Not in this process: PocketSphinx holds Python's interpreter lock for the
    whole decode (36 s for 15 s of noise on a loaded machine), which would
    freeze everything else here meanwhile: a user's microphone (its client
    then sends silence under the hum it was sending), the speech services'
    other endpoints."""
    global _apart
    import concurrent.futures.process
    import multiprocessing
    with _apart_lock:
        if _apart is None:
            # spawn, not fork: the callers run threads (LiveKit's SDK, the
            # HTTP server's), which a fork would copy mid-lock.
            _apart = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_follow_parent, initargs=(os.getpid(),))
        pool = _apart
    try:
        return pool.submit(transcribe_here, pcm, rate).result()
    except concurrent.futures.process.BrokenProcessPool:
        # The child died (killed, out of memory): the next call starts another.
        with _apart_lock:
            if _apart is pool:
                _apart = None
        raise


def _follow_parent(parent: int) -> None:
    """In the child: exit when the parent is gone (a parent killed outright,
    as a test's services are, never tells its pool to stop), at the normal
    priority whatever the parent's (see talker.py's `keep_up`)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError:
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)
    threading.Thread(target=watch, daemon=True).start()


def transcribe_here(pcm: np.ndarray, rate: int) -> str:
    """`transcribe` in the calling process (the child's side of it)."""
    global _decoder
    from pocketsphinx import Decoder
    audio = resample(pcm, rate, RECOGNISER_RATE)
    with _decoder_lock:
        if _decoder is None:
            _decoder = Decoder(samprate=RECOGNISER_RATE, loglevel="FATAL")
        d = _decoder
        d.start_utt()
        d.process_raw(audio.tobytes(), full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        return hyp.hypstr if hyp else ""


def transcribe_http(url: str, pcm: np.ndarray, rate: int) -> str:
    """Transcription by an OpenAI-compatible recogniser: POST a WAV to
    {url}/v1/audio/transcriptions and return its "text"."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"answer.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode() + buf.getvalue() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{url.rstrip('/')}/v1/audio/transcriptions", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["text"]
