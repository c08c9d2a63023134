#!/usr/bin/env python3
"""The smallest LiveKit Agents worker that does what `mindbot-agent run` does
without the metering: the yardstick `mindbot-agent bench agents` measures our
worker against.

It registers under LIVEKIT_AGENT_NAME with the server at LIVEKIT_URL
(LIVEKIT_API_KEY / LIVEKIT_API_SECRET), takes up to AGENT_MAX_JOBS jobs, joins every room it is dispatched to
and stays. When the dispatch metadata (JSON) carries "hangup_after": S and a
"user_id", it does what our worker does when a balance of S seconds runs out:
S seconds after the user is in the room it sends the user
{"type": "ended", "reason": "balance_exhausted", "at": <unix time>} on topic
mindbot.session, waits the same 300 ms our worker gives that message, and
removes the user through the server API.

No plugins, no model files: nothing is downloaded at run time.

  python minimal_agent.py start     # what the bench runs (production mode)
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from livekit import api
from livekit.agents import AgentServer, JobContext, cli

TOPIC_SESSION = "mindbot.session"
REASON_LEAD = 0.3  # seconds between the "ended" message and the removal, as in our worker

# Load as our worker reports it: running jobs over the job limit (AGENT_MAX_JOBS).
# The framework's default load is the whole machine's CPU use, which on a
# shared 2-core machine reaches 1.0 from other people's work, and the server
# then sends this worker nothing. Jobs still run in their own processes (the
# framework's default executor).
MAX_JOBS = int(os.environ.get("AGENT_MAX_JOBS", "50"))
server = AgentServer(load_fnc=lambda s: min(len(s.active_jobs) / MAX_JOBS, 1.0), load_threshold=1.0)


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    meta = json.loads(ctx.job.metadata or "{}")
    await ctx.connect()
    after = meta.get("hangup_after")
    user = meta.get("user_id")
    if after is None or user is None:
        return  # join and stay: the job lives until the room ends

    participant = await ctx.wait_for_participant(identity=user)
    await asyncio.sleep(float(after))
    ended = {"type": "ended", "reason": "balance_exhausted", "at": time.time()}
    await ctx.room.local_participant.publish_data(
        json.dumps(ended), reliable=True, destination_identities=[participant.identity], topic=TOPIC_SESSION
    )
    await asyncio.sleep(REASON_LEAD)
    await ctx.api.room.remove_participant(
        api.RoomParticipantIdentity(room=ctx.room.name, identity=participant.identity)
    )
    ctx.shutdown("user removed")


if __name__ == "__main__":
    cli.run_app(server)
