#!/usr/bin/env python3
"""Talk with the agent as an end user does: speak questions (espeak-ng
speech) into the room, record the agent's answers, transcribe them with
PocketSphinx (or an OpenAI-compatible recogniser, --stt-url), and time them;
optionally talk over an answer (barge-in) and time how fast the agent goes
quiet; optionally type questions (--type, a text stream on LiveKit's
lk.chat). It also records what LiveKit's frontends read: the agent's
lk.agent.state changes and the lk.transcription streams. Prints one JSON
report.

Timeline: connect and publish a microphone track (silence until speaking);
wait for the agent's greeting to finish (--skip-greeting); then for each
--say TEXT: speak it, wait for the answer's first sound (latency, from the
end of our speech), record it until it has been quiet for --quiet seconds,
transcribe it. With --barge-in TEXT, the last answer is interrupted
--barge-after seconds after it starts by speaking TEXT over it. With
--cough N:S, S seconds into the answer to question N a 200 ms burst (a cough)
goes over it. With --noise DBFS, a steady hum and hiss at that level is under
everything we send, from the start; --noise-alone S listens S seconds to the
noise alone (after the greeting) before the first question.

Example:
  talker.py --token T --say "What is your name?" --barge-in "Wait, stop please."

Result (stdout):
  {"joined": true, "greeting": {"heard": bool, "seconds": float},
   "turns": [{"said", "said_wall": unix time our speech ended, "latency_ms": float|null,
              "seconds": float, "transcript": str, "cough_at_s": float (into the answer, with --cough)}],
   "barge_in": {"said", "answer_seconds_before": float, "stopped_after_ms": float|null,
                "quiet_seconds_after": float} | null,
   "noise_alone": {"seconds": float, "agent_sound_seconds": float} | null,
   "end": {"disconnected": bool, "last_sound_before_s": float|null,   # with --stay
           "transcript": str (the last 8 s)},
   "typed": [{"said", "latency_ms": float|null, "seconds": float, "transcript": str}],
   "my_track": our microphone's track sid,
   "agent_states": [{"state", "at": s since we started connecting}],  # lk.agent.state as seen
   "transcripts": [{"from", "attributes", "text", "chunks", "at", "error"?}],  # lk.transcription
   "mic_underruns": times our microphone's queue ran dry (we fell behind real time),
   "duration": seconds}
A sound is a 10 ms block louder than -45 dBFS; the agent has stopped when
none comes for --quiet seconds (its track may send silence or nothing).
"""

from __future__ import annotations

import asyncio
import bisect
import os
import sys
import time
from typing import Optional

import numpy as np
from livekit import rtc

from common import (ClientError, Parser, add_join_args, join_token, log, read_text_stream, run_main,
                    setup_logging)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "speech"))
import speech  # noqa: E402

RATE = 48000
FRAME = RATE // 100          # 10 ms frames out and analysis blocks in
LOUD_DBFS = -45.0
MIC_QUEUE_MS = 500


def parse_args():
    p = Parser(description=__doc__.split("\n\n")[0])
    add_join_args(p)
    p.add_argument("--say", action="append", default=[], metavar="TEXT",
                   help="a question (repeatable); 'A || B' pauses --gap seconds between A and B")
    p.add_argument("--gap", type=float, default=0.7, metavar="S", help="the pause at '||' (default %(default)s)")
    p.add_argument("--type", action="append", default=[], metavar="TEXT",
                   help="after the spoken questions, type TEXT on lk.chat and record the answer (repeatable)")
    p.add_argument("--junk-chat", action="store_true",
                   help="before the typed questions, send an lk.chat stream that never ends and a "
                   "100,000-byte lk.chat text, then wait 3 s (the agent must drop both)")
    p.add_argument("--barge-in", metavar="TEXT", help="talk over the last answer with TEXT")
    p.add_argument("--barge-after", type=float, default=1.5, metavar="S",
                   help="seconds into the answer before talking over it (default %(default)s)")
    p.add_argument("--voice", default="en-us", help="espeak-ng voice of the user (default %(default)s)")
    p.add_argument("--quiet", type=float, default=1.5, metavar="S",
                   help="an answer is over after S seconds without sound (default %(default)s)")
    p.add_argument("--skip-greeting", action="store_true", help="do not wait for the agent's greeting")
    p.add_argument("--answer-timeout", type=float, default=30.0, metavar="S")
    p.add_argument("--no-transcribe", action="store_true", help="time only (benchmarks)")
    p.add_argument("--stt-url", metavar="URL",
                   help="transcribe the answers with the OpenAI-compatible /v1/audio/transcriptions "
                        "at URL (e.g. the local stack's Whisper) instead of PocketSphinx")
    p.add_argument("--connect-timeout", type=float, default=15.0, metavar="S")
    p.add_argument("--control", metavar="URL", help="the speech services' /control URL (for --fail-before)")
    p.add_argument("--fail-before", action="append", default=[], metavar="N:STAGE",
                   help="before question N (from 1), make the next two STAGE requests fail with HTTP 500")
    p.add_argument("--cough", action="append", default=[], metavar="N:S",
                   help="S seconds into the answer to question N (from 1), a 200 ms burst over it")
    p.add_argument("--noise", type=float, metavar="DBFS", help="a steady hum and hiss at DBFS under all we send")
    p.add_argument("--noise-alone", type=float, default=0.0, metavar="S",
                   help="after the greeting, S seconds of only the noise before the first question")
    p.add_argument("--stay", type=float, default=0.0, metavar="S",
                   help="after the questions, listen until disconnected or S seconds have passed")
    return p.parse_args()


def control(url: str, body: dict) -> None:
    import json
    import urllib.request
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        r.read()


class Ear:
    """The agent's audio as (arrival time, samples) blocks, and when it was loud."""

    def __init__(self) -> None:
        self.blocks: list = []      # (t, np.int16 array)
        self.loud: list = []        # arrival times of loud blocks
        self.changed = asyncio.Event()

    def add(self, pcm: np.ndarray) -> None:
        now = time.monotonic()
        for i in range(0, len(pcm) - FRAME + 1, FRAME):
            block = pcm[i:i + FRAME]
            self.blocks.append((now, block))
            rms = float(np.sqrt(np.mean((block.astype(np.float64) / 32768.0) ** 2)))
            if rms > 0 and 20 * np.log10(rms) > LOUD_DBFS:
                self.loud.append(now)
        self.changed.set()

    def first_loud_after(self, t: float) -> Optional[float]:
        # `loud` is in time order; searched, not scanned (called on every
        # block while waiting, over a list that grows all session).
        i = bisect.bisect_right(self.loud, t)
        return self.loud[i] if i < len(self.loud) else None

    async def wait_sound(self, after: float, timeout: float) -> Optional[float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = self.first_loud_after(after)
            if t is not None:
                return t
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass
        return None

    async def wait_quiet(self, quiet: float, timeout: float) -> float:
        """Waits until no loud block came for `quiet` s; returns the last loud time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.loud[-1] if self.loud else 0.0
            if time.monotonic() - last >= quiet:
                return last
            await asyncio.sleep(0.05)
        return self.loud[-1] if self.loud else 0.0

    def stop_after(self, t: float, quiet: float) -> Optional[float]:
        """The last loud block after `t` that is followed by `quiet` s without one."""
        times = self.loud[bisect.bisect_left(self.loud, t):]
        for a, b in zip(times, times[1:] + [float("inf")]):
            if b - a >= quiet:
                return a
        return None

    def audio(self, start: float, end: float) -> np.ndarray:
        parts = [b for (t, b) in self.blocks if start <= t <= end]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)


def trim(pcm: np.ndarray) -> np.ndarray:
    """Without the quiet espeak-ng leaves before and after the words, so
    timings start and end with the speech itself."""
    n = len(pcm) // FRAME
    blocks = pcm[: n * FRAME].reshape(n, FRAME).astype(np.float64) / 32768.0
    loud = np.nonzero(np.sqrt(np.mean(blocks ** 2, axis=1)) > 10 ** (LOUD_DBFS / 20))[0]
    if len(loud) == 0:
        return pcm
    return pcm[loud[0] * FRAME:(loud[-1] + 1) * FRAME]


class Noise:
    """A steady noise: a 100 Hz mains hum with two harmonics, and white hiss
    6 dB under it, at `dbfs` RMS overall; continuous across frames."""

    def __init__(self, dbfs: float) -> None:
        self.amplitude = 10 ** (dbfs / 20) * 32768.0
        self.n = 0
        self.rng = np.random.default_rng(7)

    def next(self) -> np.ndarray:
        t = (self.n + np.arange(FRAME)) / RATE
        self.n += FRAME
        hum = np.sin(2 * np.pi * 100 * t) + 0.5 * np.sin(2 * np.pi * 200 * t) + 0.25 * np.sin(2 * np.pi * 300 * t)
        hum /= np.sqrt((1 + 0.25 + 0.0625) / 2)          # unit RMS
        hiss = self.rng.standard_normal(FRAME) * 0.5        # 6 dB under the hum
        return (self.amplitude / np.sqrt(1.25)) * (hum + hiss)


def cough() -> np.ndarray:
    """200 ms of a cough-like burst: noise, band-limited by a short moving
    average, with a fast attack and a decay, peaking near -12 dBFS."""
    n = RATE // 5
    rng = np.random.default_rng(11)
    burst = np.convolve(rng.standard_normal(n + 15), np.ones(16) / 4, mode="valid")[:n]
    env = np.minimum(np.arange(n) / (RATE * 0.01), 1.0) * np.exp(-np.arange(n) / (RATE * 0.08))
    return np.clip(burst * env * 0.25 * 32768, -32768, 32767).astype(np.int16)


class Mouth:
    """Our microphone: silence, or speech when asked, in real time (with
    the steady noise under both, when asked)."""

    def __init__(self, source: rtc.AudioSource, noise: Optional[Noise] = None) -> None:
        self.source = source
        self.noise = noise
        self.gap = 0.7
        self.pending: list = []
        self.done: Optional[asyncio.Future] = None
        self.started_at: Optional[float] = None
        # Times the queue had run dry when the next chunk came (after the
        # first second): a hole in what we sent.
        self.underruns = 0

    async def run(self) -> None:
        silence = np.zeros(FRAME, np.int16)
        sent = 0
        tail = 0.0  # when what the source has queued will have gone out
        while True:
            # When this chunk goes out: after what is queued, or now if the
            # queue ran dry (the source plays out in real time meanwhile).
            now = time.monotonic()
            sent += 1
            if tail < now and sent > 100:
                self.underruns += 1
            out_at = max(tail, now)
            tail = out_at + FRAME / RATE
            if self.pending:
                chunk = self.pending.pop(0)
                if self.started_at is None:
                    self.started_at = out_at
            else:
                chunk = silence
                if self.done is not None and not self.done.done():
                    self.done.set_result(out_at)
            if self.noise is not None:
                chunk = np.clip(chunk.astype(np.float64) + self.noise.next(), -32768, 32767).astype(np.int16)
            await self.source.capture_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, FRAME))

    async def say(self, text: str, voice: str) -> tuple:
        """Speaks `text`; returns (time our first sample went out, time our last one did)."""
        gap = np.zeros(int(RATE * self.gap) // FRAME * FRAME, np.int16)
        # Off the event loop, which must keep our microphone fed meanwhile.
        parts = await asyncio.get_running_loop().run_in_executor(
            None, lambda: [trim(speech.synthesise(t.strip(), voice=voice, rate=RATE, speed=150))
                           for t in text.split("||")])
        pcm = np.concatenate([x for p in parts for x in (p, np.zeros((-len(p)) % FRAME, np.int16), gap)][:-1])
        return await self.send(pcm, repr(text))

    async def send(self, pcm: np.ndarray, what: str) -> tuple:
        pcm = np.concatenate([pcm, np.zeros((-len(pcm)) % FRAME, np.int16)])
        self.started_at = None
        self.done = asyncio.get_running_loop().create_future()
        self.pending = [pcm[i:i + FRAME] for i in range(0, len(pcm), FRAME)]
        while self.started_at is None:
            await asyncio.sleep(0.005)
        started = self.started_at
        ended = await self.done
        log.info("said %s from %.3f to %.3f (wall clock)", what, time.time() - (time.monotonic() - started),
                 time.time() - (time.monotonic() - ended))
        return started, ended


def keep_up() -> None:
    """Runs this process (and the threads it starts from now on, LiveKit's
    among them) ahead of the machine's other work where allowed: we play a
    person's own device, which a loaded CI machine must not starve into
    holes in our microphone (the agent under test keeps its priority). Our
    recogniser's child process goes back to the normal priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
    except OSError as e:  # not allowed (not root, no CAP_SYS_NICE): as is
        log.debug("priority unchanged: %s", e)


async def main() -> dict:
    args = parse_args()
    keep_up()

    def transcribe(pcm: np.ndarray, rate: int) -> str:
        if args.stt_url:
            return speech.transcribe_http(args.stt_url, pcm, rate)
        return speech.transcribe(pcm, rate)

    setup_logging(args.verbose)
    token = join_token(args)
    room = rtc.Room()
    ear = Ear()
    tasks: list = []

    @room.on("track_subscribed")
    def _subscribed(track: rtc.Track, pub, p: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            log.info("hearing %s's track %s", p.identity, track.sid)
            tasks.append(asyncio.create_task(listen(track)))

    disconnected = asyncio.Event()
    clock_start = time.monotonic()
    states: list = []
    transcripts: list = []

    def note_state(p) -> None:
        state = p.attributes.get("lk.agent.state")
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and state and (
                not states or states[-1]["state"] != state):
            states.append({"state": state, "at": round(time.monotonic() - clock_start, 3)})
            log.info("agent state: %s", state)

    room.on("participant_connected", note_state)
    room.on("participant_attributes_changed", lambda changed, p: note_state(p))

    async def read_transcript(reader: rtc.TextStreamReader, sender: str) -> None:
        entry = {"from": sender, "attributes": {}, "text": "", "chunks": 0, "at": None}
        transcripts.append(entry)
        await read_text_stream(reader, entry, lambda: round(time.monotonic() - clock_start, 3))
        log.info("transcript from %s: %r %s", sender, entry["text"][:80], entry["attributes"])

    room.register_text_stream_handler(
        "lk.transcription", lambda reader, sender: tasks.append(
            asyncio.create_task(read_transcript(reader, sender))))

    @room.on("disconnected")
    def _gone(reason) -> None:
        log.info("disconnected: %s", reason)
        disconnected.set()

    async def listen(track: rtc.Track) -> None:
        stream = rtc.AudioStream.from_track(track=track, sample_rate=RATE, num_channels=1)
        async for ev in stream:
            ear.add(np.frombuffer(ev.frame.data, dtype=np.int16))

    try:
        await asyncio.wait_for(room.connect(args.url, token, rtc.RoomOptions(auto_subscribe=True)),
                               args.connect_timeout)
    except (asyncio.TimeoutError, rtc.ConnectError) as e:
        raise ClientError(f"connecting to {args.url} failed: {e}", joined=False)
    t0 = time.monotonic()
    for p in room.remote_participants.values():
        note_state(p)
    # Under --noise, half a second queued ahead: a client starved of CPU (a
    # loaded CI machine) that falls behind by less than that still sends
    # its microphone without a hole. With 50 ms, CI runs showed the agent
    # quieter frames under the hum (the floor sank 10 to 20 dB), as if the
    # room had gone quiet. Our speech's times are when it leaves the queue
    # (by our own reckoning of it). Without noise a hole is silence in
    # silence, and 50 ms keeps those times close to what the SDK really
    # sent: with 500 ms, a barge-in's start read later than the agent's
    # reaction to it once.
    queue_ms = MIC_QUEUE_MS if args.noise is not None else 50
    source = rtc.AudioSource(RATE, 1, queue_size_ms=queue_ms)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    publication = await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
    mouth = Mouth(source, Noise(args.noise) if args.noise is not None else None)
    mouth.gap = args.gap
    tasks.append(asyncio.create_task(mouth.run()))

    async def hear_answer(turn: dict, onset: float) -> float:
        """Wait for the answer that began at `onset` to end; note its length and,
        unless --no-transcribe, what it said. Returns when it ended."""
        last = await ear.wait_quiet(args.quiet, args.answer_timeout)
        turn["seconds"] = round(last - onset, 2)
        if not args.no_transcribe:
            pcm = ear.audio(onset - 0.1, last + 0.1)
            turn["transcript"] = await asyncio.get_running_loop().run_in_executor(None, transcribe, pcm, RATE)
        return last

    report: dict = {"joined": True, "greeting": None, "turns": [], "barge_in": None, "noise_alone": None,
                    "typed": [], "my_track": publication.sid, "agent_states": states, "transcripts": transcripts}
    try:
        if not args.skip_greeting:
            first = await ear.wait_sound(0.0, 30.0)
            if first is not None:
                last = await ear.wait_quiet(args.quiet, 30.0)
                report["greeting"] = {"heard": True, "seconds": round(last - first, 2)}
            else:
                report["greeting"] = {"heard": False, "seconds": 0.0}
        if args.noise_alone > 0:
            start = time.monotonic()
            await asyncio.sleep(args.noise_alone)
            sound = sum(1 for t in ear.loud if t >= start) * FRAME / RATE
            report["noise_alone"] = {"seconds": args.noise_alone, "agent_sound_seconds": round(sound, 2)}
        coughs = {}
        for item in args.cough:
            n, _, after = item.partition(":")
            coughs[int(n) - 1] = float(after)
        fails = {}
        for item in args.fail_before:
            n, _, stage = item.partition(":")
            fails[int(n) - 1] = stage
        for i, text in enumerate(args.say):
            barge = args.barge_in is not None and i == len(args.say) - 1
            if i in fails:
                control(args.control, {"fail": {"stage": fails[i], "times": 2, "status": 500}})
            _, said_at = await mouth.say(text, args.voice)
            onset = await ear.wait_sound(said_at, args.answer_timeout)
            turn = {"said": text, "latency_ms": None, "seconds": 0.0, "transcript": "",
                    "said_wall": round(time.time() - (time.monotonic() - said_at), 3)}
            report["turns"].append(turn)
            if onset is None:
                log.info("no answer to %r", text)
                continue
            turn["latency_ms"] = round((onset - said_at) * 1000, 1)
            if barge:
                await asyncio.sleep(max(0.0, onset + args.barge_after - time.monotonic()))
                start, _ = await mouth.say(args.barge_in, args.voice)
                stop = ear.stop_after(start, args.quiet)
                later = ear.first_loud_after(stop) if stop is not None else None
                report["barge_in"] = {
                    "said": args.barge_in,
                    "answer_seconds_before": round(start - onset, 2),
                    "stopped_after_ms": round((stop - start) * 1000, 1) if stop is not None else None,
                    "quiet_seconds_after": round((later or time.monotonic()) - stop, 2) if stop else 0.0,
                }
                turn["seconds"] = round(start - onset, 2)
                last = await ear.wait_quiet(args.quiet, args.answer_timeout)  # the answer to the interruption
                continue
            if i in coughs:
                await asyncio.sleep(max(0.0, onset + coughs[i] - time.monotonic()))
                start, _ = await mouth.send(cough(), "a cough")
                turn["cough_at_s"] = round(start - onset, 2)
            last = await hear_answer(turn, onset)
            if not args.no_transcribe:
                log.info("answer to %r: %r", text, turn["transcript"])
        if args.junk_chat:
            writer = await room.local_participant.stream_text(topic="lk.chat")
            await writer.write("this typed turn never ends")
            await room.local_participant.send_text("y" * 100_000, topic="lk.chat")
            await asyncio.sleep(3.0)
        for text in args.type:
            sent_at = time.monotonic()
            await room.local_participant.send_text(text, topic="lk.chat")
            onset = await ear.wait_sound(sent_at, args.answer_timeout)
            turn = {"said": text, "latency_ms": None, "seconds": 0.0, "transcript": ""}
            report["typed"].append(turn)
            if onset is None:
                log.info("no answer to typed %r", text)
                continue
            turn["latency_ms"] = round((onset - sent_at) * 1000, 1)
            last = await hear_answer(turn, onset)
        if args.stay > 0:
            try:
                await asyncio.wait_for(disconnected.wait(), args.stay)
            except asyncio.TimeoutError:
                pass
            end = time.monotonic()
            last = ear.loud[-1] if ear.loud else None
            tail = ear.audio(end - 8.0, end)
            report["end"] = {
                "disconnected": disconnected.is_set(),
                "last_sound_before_s": round(end - last, 2) if last else None,
                "transcript": "" if args.no_transcribe else await asyncio.get_running_loop().run_in_executor(
                    None, transcribe, tail, RATE),
            }
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await room.disconnect()
    report["mic_underruns"] = mouth.underruns
    report["duration"] = round(time.monotonic() - t0, 2)
    return report


if __name__ == "__main__":
    run_main(main)
