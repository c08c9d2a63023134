#!/usr/bin/env python3
"""Play an end user in a LiveKit room and report what happened as one JSON object.

Timeline: connect; publish the tone (if asked); wait for the --wait-for
participants (if any); then the clock starts: after --send-delay, send the
--send-data packets; stay until max(--stay, --record-seconds) seconds after
the clock started, or until the server disconnects us; leave; print the result.
Audio is recorded from subscription until --record-seconds after the clock
started.

Example:
  participant.py --room r1 --identity user --publish-tone 440 --stay 5
  participant.py --room r1 --identity ear --record-seconds 5 --expect-data chat

Result (stdout):
  {"joined": true, "room": ..., "identity": ...,
   "participants_seen": [identity, ...],            # every remote seen, sorted
   "audio": {identity: {"frequency_hz": float|null, # dominant frequency
                        "rms_dbfs": float|null,     # level of the non-silent part
                        "seconds": float,           # non-silent audio received
                        "received_seconds": float,  # all audio received
                        "tracks": int}},
   "data": [{"topic", "from", "text", "kind": "reliable"|"lossy", "at": s}],
   "texts": [{"topic", "from", "attributes", "text", "chunks", "at", "error"?}],  # --text-topic streams
   "texts_sent": [{"topic", "bytes", "stream_id"?, "error"?}],
   "missing_topics": [...],                          # --expect-data topics never seen
   "sent": [{"topic", "text", "reliable", "error"?}],
   "flooded": int, "flood_error": str|null,        # --flood-data packets sent
   "waited_for": {identity: bool},
   "watched": {"identity", "present", "present_at_join", "joined_at", "left_at", "attributes",
               "metadata", "kind", "disconnect_reason"} | null,
   "published": {"tone_hz", "track_sid"} | null,
   "disconnect_reason": "CLIENT_INITIATED" | "PARTICIPANT_REMOVED" | ...,
   "ended": "stay_elapsed" | "disconnected",
   "duration": seconds since the clock started}
Times ("at", "joined_at", "left_at") are seconds since the clock started
(negative: before it; 0.0 for joined_at means present when we connected).
A failure to connect prints {"error": ..., "joined": false} and exits 1.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from livekit import rtc

from common import (ClientError, Parser, add_join_args, join_token, log, read_text_stream,
                    run_main, setup_logging)

SAMPLE_RATE = 48000
FRAME_MS = 20
TONE_AMPLITUDE = 0.3
SKIP_SECONDS = 0.5          # ignored at the start of each received track (ramp-up)
SILENCE_DBFS = -50.0        # 10 ms blocks quieter than this count as silence
BLOCK = SAMPLE_RATE // 100  # 10 ms analysis blocks


def parse_args():
    p = Parser(description=__doc__.split("\n\n")[0])
    add_join_args(p)
    p.add_argument("--publish-tone", type=float, metavar="HZ",
                   help="publish a microphone track with a sine tone of HZ (48 kHz mono)")
    p.add_argument("--mute-after", type=float, metavar="S", default=None,
                   help="mute the published tone S seconds after the clock starts")
    p.add_argument("--record-seconds", type=float, metavar="S", default=0.0,
                   help="subscribe to remote audio and measure it for S seconds")
    p.add_argument("--send-data", action="append", default=[], metavar="TOPIC:TEXT",
                   help="send a data packet once the clock starts (repeatable, in order)")
    p.add_argument("--send-delay", type=float, default=0.0, metavar="S",
                   help="wait S seconds after the clock starts before sending. The server "
                   "announces a participant that publishes no track only every ~3 s, and "
                   "data arriving before that announcement has no known sender (\"from\": "
                   "null)")
    p.add_argument("--send-lossy", action="store_true",
                   help="send the --send-data packets lossy instead of reliable")
    p.add_argument("--flood-data", type=int, default=0, metavar="N",
                   help="after the --send-data packets, send N lossy 512-byte packets on "
                   "topic flood as fast as the SDK takes them (reported as \"flooded\")")
    p.add_argument("--expect-data", action="append", default=[], metavar="TOPIC",
                   help="record received data on TOPIC (repeatable); without it, all "
                   "topics are recorded")
    p.add_argument("--text-topic", action="append", default=[], metavar="TOPIC",
                   help="receive text streams on TOPIC with register_text_stream_handler "
                   "(repeatable); reported as \"texts\" with their final attributes")
    p.add_argument("--abandon-stream", metavar="TOPIC",
                   help="once the clock starts (after --send-delay), open a text stream on "
                   "TOPIC, write to it and never close it")
    p.add_argument("--send-text-size", action="append", default=[], metavar="TOPIC:BYTES",
                   help="then send_text a generated text of BYTES bytes (multi-byte "
                   "characters included) on TOPIC (repeatable, in order)")
    p.add_argument("--send-text", action="append", default=[], metavar="TOPIC:TEXT",
                   help="then send_text TEXT on TOPIC (repeatable, in order)")
    p.add_argument("--stay", type=float, metavar="S", default=0.0,
                   help="stay S seconds after the clock starts")
    p.add_argument("--watch-identity", metavar="ID",
                   help="report presence, join/leave times and attributes of ID")
    p.add_argument("--wait-for", action="append", default=[], metavar="ID",
                   help="start the clock only once ID is in the room (repeatable)")
    p.add_argument("--wait-timeout", type=float, default=20.0, metavar="S",
                   help="longest wait for --wait-for participants (default %(default)s)")
    p.add_argument("--connect-timeout", type=float, default=15.0, metavar="S",
                   help="longest wait for the connection (default %(default)s)")
    args = p.parse_args()
    for item in args.send_data + args.send_text:
        if ":" not in item:
            p.error(f"--send-data/--send-text expects TOPIC:TEXT, got {item!r}")
    for item in args.send_text_size:
        if not item.partition(":")[2].isdigit():
            p.error(f"--send-text-size expects TOPIC:BYTES, got {item!r}")
    return args


def generated_text(size: int) -> str:
    """A text of exactly `size` UTF-8 bytes with two-byte characters in it (so
    chunking must respect character boundaries)."""
    unit = "ünïcode-"          # 10 bytes
    text = unit * (size // len(unit.encode())) + "x" * (size % len(unit.encode()))
    assert len(text.encode()) == size
    return text


def analyse(samples: np.ndarray) -> dict:
    """Non-silent seconds, level and dominant frequency of int16 mono samples."""
    x = samples.astype(np.float64) / 32768.0
    n = len(x) // BLOCK
    blocks = x[: n * BLOCK].reshape(n, BLOCK) if n else np.zeros((0, BLOCK))
    block_rms = np.sqrt(np.mean(blocks ** 2, axis=1)) if n else np.zeros(0)
    active = block_rms > 10 ** (SILENCE_DBFS / 20)
    out = {
        "frequency_hz": None,
        "rms_dbfs": None,
        "seconds": round(float(active.sum()) * BLOCK / SAMPLE_RATE, 3),
        "received_seconds": round(len(x) / SAMPLE_RATE, 3),
    }
    skip = int(SKIP_SECONDS * SAMPLE_RATE / BLOCK)
    sel = blocks[skip:][active[skip:]].reshape(-1)
    if sel.size < BLOCK * 10:  # under 0.1 s of sound: nothing to measure
        return out
    rms = float(np.sqrt(np.mean(sel ** 2)))
    out["rms_dbfs"] = round(20 * math.log10(max(rms, 1e-12)), 2)
    out["frequency_hz"] = dominant_frequency(sel)
    return out


def dominant_frequency(x: np.ndarray) -> Optional[float]:
    """Peak of the averaged (Welch-style) power spectrum, refined by parabolic
    interpolation on the log magnitude; ignores everything under 40 Hz."""
    seg = min(16384, 1 << int(math.log2(len(x))))
    window = np.hanning(seg)
    hop = seg // 2
    power = np.zeros(seg // 2 + 1)
    count = 0
    for start in range(0, len(x) - seg + 1, hop):
        power += np.abs(np.fft.rfft(x[start:start + seg] * window)) ** 2
        count += 1
    if not count:
        return None
    lo = int(40 * seg / SAMPLE_RATE) + 1
    k = lo + int(np.argmax(power[lo:-1]))
    a, b, c = (np.log(power[i] + 1e-30) for i in (k - 1, k, k + 1))
    denom = a - 2 * b + c
    shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
    return round(float((k + shift) * SAMPLE_RATE / seg), 2)


async def publish_tone(room: rtc.Room, hz: float, stop: asyncio.Event) -> tuple:
    source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=200)
    track = rtc.LocalAudioTrack.create_audio_track("tone", source)
    opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    pub = await room.local_participant.publish_track(track, opts)

    async def feed() -> None:
        n = SAMPLE_RATE * FRAME_MS // 1000
        step = 2 * math.pi * hz / SAMPLE_RATE
        phase = 0.0
        while not stop.is_set():
            t = phase + step * np.arange(n)
            pcm = (TONE_AMPLITUDE * 32767 * np.sin(t)).astype(np.int16)
            phase = float((phase + step * n) % (2 * math.pi))
            # capture_frame blocks while the source's queue is full: real-time pacing
            await source.capture_frame(rtc.AudioFrame(pcm.tobytes(), SAMPLE_RATE, 1, n))

    return pub, asyncio.create_task(feed()), source


@dataclass
class State:
    t0: float = 0.0                      # when the clock started (monotonic)
    seen: set = field(default_factory=set)
    tracks: dict = field(default_factory=dict)   # identity -> [list of int16 arrays per track]
    record_until: float = math.inf
    data: list = field(default_factory=list)
    texts: list = field(default_factory=list)
    watched: Optional[dict] = None
    disconnect_reason: Optional[str] = None
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 3)


def kind_name(kind: int) -> str:
    name = rtc.ParticipantKind.Name(kind)
    return name.removeprefix("PARTICIPANT_KIND_").lower()


def reason_name(reason) -> Optional[str]:
    if reason is None:
        return None
    try:
        return rtc.DisconnectReason.Name(reason)
    except (ValueError, TypeError):
        return str(reason)


async def main() -> dict:
    args = parse_args()
    setup_logging(args.verbose)
    token = join_token(args)
    st = State(t0=time.monotonic())
    expect = set(args.expect_data)
    room = rtc.Room()
    record = args.record_seconds > 0
    rec_tasks: list[asyncio.Task] = []

    def watch_update(p: rtc.RemoteParticipant) -> None:
        if st.watched is not None and p.identity == args.watch_identity:
            st.watched.update(attributes=dict(p.attributes), metadata=p.metadata,
                              kind=kind_name(p.kind))

    @room.on("participant_connected")
    def _joined(p: rtc.RemoteParticipant) -> None:
        log.info("participant joined: %s", p.identity)
        st.seen.add(p.identity)
        if st.watched is not None and p.identity == args.watch_identity:
            st.watched.update(present=True, joined_at=st.now(), left_at=None)
            watch_update(p)
        st.changed.set()

    @room.on("participant_disconnected")
    def _left(p: rtc.RemoteParticipant) -> None:
        log.info("participant left: %s (%s)", p.identity, reason_name(p.disconnect_reason))
        if st.watched is not None and p.identity == args.watch_identity:
            st.watched.update(present=False, left_at=st.now(),
                              disconnect_reason=reason_name(p.disconnect_reason))
        st.changed.set()

    @room.on("participant_attributes_changed")
    def _attrs(changed: dict, p) -> None:
        if isinstance(p, rtc.RemoteParticipant):
            log.info("attributes of %s changed: %s", p.identity, changed)
            watch_update(p)

    @room.on("participant_metadata_changed")
    def _meta(p, old: str, new: str) -> None:
        if isinstance(p, rtc.RemoteParticipant):
            watch_update(p)

    @room.on("track_subscribed")
    def _subscribed(track: rtc.Track, pub, p: rtc.RemoteParticipant) -> None:
        log.info("subscribed to %s track %s of %s", rtc.TrackKind.Name(track.kind),
                 track.sid, p.identity)
        if record and track.kind == rtc.TrackKind.KIND_AUDIO:
            chunks: list = []
            st.tracks.setdefault(p.identity, []).append(chunks)
            rec_tasks.append(asyncio.create_task(collect(track, chunks)))

    async def collect(track: rtc.Track, chunks: list) -> None:
        stream = rtc.AudioStream.from_track(track=track, sample_rate=SAMPLE_RATE, num_channels=1)
        try:
            async for ev in stream:
                if time.monotonic() >= st.record_until:
                    break
                chunks.append(np.frombuffer(ev.frame.data, dtype=np.int16).copy())
        finally:
            await stream.aclose()

    @room.on("data_received")
    def _data(packet: rtc.DataPacket) -> None:
        topic = packet.topic or ""
        # None when the sender is not (yet) known to this client: see --send-delay
        sender = packet.participant.identity if packet.participant else None
        text = packet.data.decode("utf-8", errors="replace")
        log.info("data on %r from %s: %r", topic, sender, text[:80])
        if not expect or topic in expect:
            st.data.append({
                "topic": topic, "from": sender, "text": text, "at": st.now(),
                "kind": "lossy" if packet.kind == rtc.DataPacketKind.KIND_LOSSY else "reliable",
            })

    text_tasks: list[asyncio.Task] = []

    async def read_text(reader: rtc.TextStreamReader, sender: str) -> None:
        entry = {"topic": reader.info.topic, "from": sender, "attributes": {}, "text": "",
                 "chunks": 0, "at": None}
        st.texts.append(entry)
        await read_text_stream(reader, entry, st.now)
        log.info("text stream on %r from %s: %d bytes in %d chunks, attributes %s",
                 entry["topic"], sender, len(entry["text"].encode()), entry["chunks"],
                 entry["attributes"])

    for topic in args.text_topic:
        room.register_text_stream_handler(
            topic, lambda reader, sender: text_tasks.append(
                asyncio.create_task(read_text(reader, sender))))

    @room.on("disconnected")
    def _disconnected(reason) -> None:
        st.disconnect_reason = reason_name(reason)
        log.info("disconnected: %s", st.disconnect_reason)
        st.disconnected.set()
        st.changed.set()

    try:
        await asyncio.wait_for(
            room.connect(args.url, token, rtc.RoomOptions(auto_subscribe=True)),
            args.connect_timeout)
    except asyncio.TimeoutError:
        raise ClientError(f"connecting to {args.url} timed out after {args.connect_timeout}s",
                          joined=False)
    except rtc.ConnectError as e:
        raise ClientError(f"connecting to {args.url} failed: {e.message}", joined=False)
    me = room.local_participant.identity
    log.info("joined room %s as %s", room.name, me)
    if args.watch_identity:
        st.watched = {"identity": args.watch_identity, "present": False, "joined_at": None,
                      "left_at": None, "present_at_join": False, "attributes": {},
                      "metadata": None, "kind": None,
                      "disconnect_reason": None}
    for p in room.remote_participants.values():
        st.seen.add(p.identity)
        if st.watched is not None and p.identity == args.watch_identity:
            st.watched.update(present=True, joined_at=st.now(), present_at_join=True)
            watch_update(p)

    stop_tone = asyncio.Event()
    tone_task = None
    published = None
    try:
        if args.publish_tone:
            pub, tone_task, _source = await publish_tone(room, args.publish_tone, stop_tone)
            published = {"tone_hz": args.publish_tone, "track_sid": pub.sid}
            log.info("publishing a %.1f Hz tone as %s", args.publish_tone, pub.sid)

        waited = {}
        if args.wait_for:
            deadline = time.monotonic() + args.wait_timeout
            while not st.disconnected.is_set():
                present = set(room.remote_participants)
                if all(i in present for i in args.wait_for) or time.monotonic() >= deadline:
                    break
                st.changed.clear()
                try:
                    await asyncio.wait_for(st.changed.wait(), deadline - time.monotonic())
                except asyncio.TimeoutError:
                    pass
            present = set(room.remote_participants)
            waited = {i: i in present for i in args.wait_for}
            log.info("waited for %s", waited)

        # the clock starts
        shift = time.monotonic() - st.t0
        st.t0 = time.monotonic()
        if st.watched is not None:
            for key in ("joined_at", "left_at"):
                if st.watched[key] is not None:
                    st.watched[key] = round(st.watched[key] - shift, 3) + 0.0
        for item in st.data:
            item["at"] = round(item["at"] - shift, 3) + 0.0
        st.record_until = st.t0 + args.record_seconds if record else math.inf

        sent = []
        flooded, flood_error = 0, None
        texts_sent = []
        wants_send = args.send_data or args.send_text or args.send_text_size or args.abandon_stream
        if wants_send and args.send_delay > 0:
            try:
                await asyncio.wait_for(st.disconnected.wait(), args.send_delay)
            except asyncio.TimeoutError:
                pass
        for item in args.send_data:
            if st.disconnected.is_set():
                break
            topic, _, text = item.partition(":")
            entry = {"topic": topic, "text": text, "reliable": not args.send_lossy}
            try:
                await room.local_participant.publish_data(
                    text, reliable=not args.send_lossy, topic=topic)
            except Exception as e:  # report, keep going
                entry["error"] = str(e)
            sent.append(entry)

        if args.abandon_stream and not st.disconnected.is_set():
            writer = await room.local_participant.stream_text(topic=args.abandon_stream)
            await writer.write("this stream is never finished")
            texts_sent.append({"topic": args.abandon_stream, "bytes": 29, "abandoned": True})
        to_send = [(t, generated_text(int(n))) for t, _, n in
                   (i.partition(":") for i in args.send_text_size)]
        to_send += [(t, text) for t, _, text in (i.partition(":") for i in args.send_text)]
        for topic, text in to_send:
            if st.disconnected.is_set():
                break
            entry = {"topic": topic, "bytes": len(text.encode())}
            try:
                info = await room.local_participant.send_text(text, topic=topic)
                entry["stream_id"] = info.stream_id
            except Exception as e:  # report, keep going
                entry["error"] = str(e)
            texts_sent.append(entry)

        for _ in range(args.flood_data):
            if st.disconnected.is_set():
                break
            try:
                await room.local_participant.publish_data(b"x" * 512, reliable=False, topic="flood")
            except Exception as e:  # report, stop flooding
                flood_error = str(e)
                break
            flooded += 1

        ended = None
        if args.mute_after is not None and tone_task is not None:
            try:
                await asyncio.wait_for(st.disconnected.wait(), max(args.mute_after - st.now(), 0.0))
                ended = "disconnected"
            except asyncio.TimeoutError:
                pub.track.mute()
                published["muted_at"] = st.now()
                log.info("muted the tone at %.3f s", published["muted_at"])
        duration = max(args.stay, args.record_seconds) - (time.monotonic() - st.t0)
        if ended is None:
            try:
                await asyncio.wait_for(st.disconnected.wait(), max(duration, 0.0))
                ended = "disconnected"
            except asyncio.TimeoutError:
                ended = "stay_elapsed"
    finally:
        stop_tone.set()
        st.record_until = 0.0
        if tone_task:
            tone_task.cancel()
            await asyncio.gather(tone_task, return_exceptions=True)
        for t in rec_tasks + text_tasks:
            t.cancel()
        await asyncio.gather(*rec_tasks, *text_tasks, return_exceptions=True)
        total = round(time.monotonic() - st.t0, 3)
        await room.disconnect()
        if st.disconnect_reason is None:  # the SDK does not always emit it for our own leave
            st.disconnect_reason = "CLIENT_INITIATED"

    audio = {}
    for identity, per_track in st.tracks.items():
        results = [analyse(np.concatenate(c) if c else np.zeros(0, np.int16)) for c in per_track]
        best = max(results, key=lambda r: (r["seconds"], r["received_seconds"]))
        audio[identity] = {**best, "tracks": len(per_track)}

    return {
        "joined": True,
        "room": room.name,
        "identity": me,
        "participants_seen": sorted(st.seen),
        "audio": audio,
        "data": st.data,
        "missing_topics": sorted(t for t in expect if not any(d["topic"] == t for d in st.data)),
        "texts": st.texts,
        "sent": sent,
        "texts_sent": texts_sent,
        "flooded": flooded,
        "flood_error": flood_error,
        "waited_for": waited,
        "watched": st.watched,
        "published": published,
        "disconnect_reason": st.disconnect_reason,
        "ended": ended,
        "duration": total,
    }


if __name__ == "__main__":
    run_main(main)
