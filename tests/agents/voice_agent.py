#!/usr/bin/env python3
"""A LiveKit Agents worker that talks: the framework's own voice pipeline
(`AgentSession` with Silero's VAD and the OpenAI plugin's speech to text,
language model and text to speech) pointed at the same OpenAI-compatible
providers as our worker. It is what `mindbot-agent bench agents --talking N`
measures our worker against.

It registers under LIVEKIT_AGENT_NAME with the server at LIVEKIT_URL
(LIVEKIT_API_KEY / LIVEKIT_API_SECRET) and takes up to AGENT_MAX_JOBS jobs.
The providers come from the environment (the bench sets them from our
config's [voice]):

  AGENT_STT_BASE_URL, AGENT_STT_MODEL    /v1/audio/transcriptions (WAV upload)
  AGENT_LLM_BASE_URL, AGENT_LLM_MODEL    /v1/chat/completions (streamed),
  AGENT_LLM_MAX_TOKENS                   at most this many tokens an answer
  AGENT_TTS_BASE_URL, AGENT_TTS_MODEL,   /v1/audio/speech, 24 kHz "pcm"
  AGENT_TTS_VOICE
  AGENT_{STT,LLM,TTS}_API_KEY            each stage's key (the local stack ignores it)

The dispatch metadata (JSON) carries the persona's "instructions" (the
system prompt). The agent does not greet: it answers what it hears.

Turn detection is the VAD's (`turn_detection="vad"`, interruptions too):
the framework's turn-detection models download their weights at run time,
and Silero's ONNX model ships inside `livekit-plugins-silero`'s wheel, so
nothing is downloaded at run time. Silero is loaded once per job process,
before a job arrives (the framework's prewarm).

  python voice_agent.py start     # what the bench runs (production mode)
"""

from __future__ import annotations

import json
import logging
import math
import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess, cli
from livekit.plugins import openai, silero

log = logging.getLogger("voice-agent")


def env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise SystemExit(f"voice_agent.py: {name} is not set")
    return value


# Load as our worker reports it: running jobs over the job limit (see
# minimal_agent.py). No threshold: while jobs wait for a process (none warm
# yet), the framework counts each as threshold / idle processes of load, so
# with its default of one idle process per core it declined the third of
# three simultaneous dispatches on these two cores; the bench dispatches
# only what it measures.
MAX_JOBS = int(os.environ.get("AGENT_MAX_JOBS", "50"))


def prewarm(proc: JobProcess) -> None:
    proc.userdata["vad"] = silero.VAD.load()


server = AgentServer(
    load_fnc=lambda s: min(len(s.active_jobs) / MAX_JOBS, 1.0),
    load_threshold=math.inf,
    setup_fnc=prewarm,
)


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    meta = json.loads(ctx.job.metadata or "{}")
    instructions = meta.get("instructions") or "You are a helpful voice assistant. Answer briefly."
    session = AgentSession(
        vad=ctx.proc.userdata["vad"],
        stt=openai.STT(
            base_url=env("AGENT_STT_BASE_URL"),
            model=env("AGENT_STT_MODEL"),
            api_key=env("AGENT_STT_API_KEY"),
            language="en",
        ),
        llm=openai.LLM(
            base_url=env("AGENT_LLM_BASE_URL"),
            model=env("AGENT_LLM_MODEL"),
            api_key=env("AGENT_LLM_API_KEY"),
            # "max_tokens", as our worker sends it (llama.cpp reads both names).
            extra_body={"max_tokens": int(env("AGENT_LLM_MAX_TOKENS"))},
        ),
        tts=openai.TTS(
            base_url=env("AGENT_TTS_BASE_URL"),
            model=env("AGENT_TTS_MODEL"),
            api_key=env("AGENT_TTS_API_KEY"),
            voice=env("AGENT_TTS_VOICE"),
            response_format="pcm",
        ),
        turn_handling={"turn_detection": "vad", "interruption": {"mode": "vad"}},
    )

    # What it heard and said, in its log, as our worker logs its turns.
    @session.on("user_input_transcribed")
    def _heard(ev) -> None:
        if ev.is_final:
            log.info("user turn", extra={"heard": ev.transcript})

    @session.on("conversation_item_added")
    def _said(ev) -> None:
        if getattr(ev.item, "role", None) == "assistant":
            log.info("agent answer", extra={"said": ev.item.text_content})

    await session.start(agent=Agent(instructions=instructions), room=ctx.room)


if __name__ == "__main__":
    cli.run_app(server)
