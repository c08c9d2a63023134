#!/usr/bin/env python3
"""Server-side actions on a LiveKit server (its Twirp room API), as one JSON object.

  room_admin.py [server flags] remove-participant ROOM IDENTITY
      -> {"ok": true, "action": "remove-participant", "room", "identity"}
  room_admin.py [server flags] delete-room ROOM
      -> {"ok": true, "action": "delete-room", "room"}
  room_admin.py [server flags] list-participants ROOM
      -> {"room", "count", "participants": [{"identity", "sid", "name", "state",
          "kind", "metadata", "attributes", "joined_at_ms", "is_publisher",
          "tracks": [{"sid", "name", "type", "source", "muted"}]}]}
  room_admin.py [server flags] create-token --room R --identity I
          [--name N] [--attribute K=V ...] [--participant-metadata S] [--ttl SECONDS]
          [--agent-dispatch NAME [--metadata JSON]]
      -> {"token", "room", "identity", "agent_dispatch": {"agent_name", "metadata"} | null}
      The token lets I join R; with --agent-dispatch its room configuration
      (RoomConfiguration.agents = [RoomAgentDispatch]) asks the server to
      dispatch agent NAME, with --metadata as the job's metadata, when the room
      is created by this participant's join.

Server flags (before the action): --url, --api-key, --api-secret (env
LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET; default: the dev server).
Failures print {"error": ..., "code"?, "status"?} and exit 1 (2 for bad usage).
"""

from __future__ import annotations

import datetime
import json

from livekit import api

from common import (ClientError, Parser, add_server_args, http_url, mint_token,
                    parse_key_values, run_main, setup_logging)


def parse_args():
    p = Parser(description="Server-side actions on a LiveKit server; prints one JSON object.")
    add_server_args(p)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    s = sub.add_parser("remove-participant", help="remove IDENTITY from ROOM")
    s.add_argument("room")
    s.add_argument("identity")

    s = sub.add_parser("delete-room", help="delete ROOM, disconnecting everyone in it")
    s.add_argument("room")

    s = sub.add_parser("list-participants", help="list the participants of ROOM")
    s.add_argument("room")

    s = sub.add_parser("create-token", help="mint a participant token (no server call)")
    s.add_argument("--room", required=True)
    s.add_argument("--identity", required=True)
    s.add_argument("--name")
    s.add_argument("--attribute", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--participant-metadata", metavar="TEXT")
    s.add_argument("--ttl", type=int, default=6 * 3600, metavar="SECONDS")
    s.add_argument("--agent-dispatch", metavar="NAME",
                   help="dispatch agent NAME to the room (RoomAgentDispatch)")
    s.add_argument("--metadata", metavar="JSON",
                   help="the agent dispatch's metadata; must be valid JSON")
    return p.parse_args()


def participant_json(p: api.ParticipantInfo) -> dict:
    return {
        "identity": p.identity,
        "sid": p.sid,
        "name": p.name,
        "state": api.ParticipantInfo.State.Name(p.state),
        "kind": api.ParticipantInfo.Kind.Name(p.kind),
        "metadata": p.metadata,
        "attributes": dict(p.attributes),
        "joined_at_ms": p.joined_at_ms,
        "is_publisher": p.is_publisher,
        "tracks": [{
            "sid": t.sid,
            "name": t.name,
            "type": api.TrackType.Name(t.type),
            "source": api.TrackSource.Name(t.source),
            "muted": t.muted,
        } for t in p.tracks],
    }


def create_token(args) -> dict:
    config = None
    dispatch = None
    if args.metadata is not None and not args.agent_dispatch:
        raise ClientError("--metadata is the agent dispatch's metadata: give --agent-dispatch too")
    if args.agent_dispatch:
        metadata = args.metadata or ""
        if metadata:
            try:
                json.loads(metadata)
            except ValueError as e:
                raise ClientError(f"--metadata is not valid JSON: {e}")
        config = api.RoomConfiguration(
            agents=[api.RoomAgentDispatch(agent_name=args.agent_dispatch, metadata=metadata)])
        dispatch = {"agent_name": args.agent_dispatch, "metadata": metadata}
    token = mint_token(
        args.api_key, args.api_secret, args.room, args.identity,
        name=args.name, attributes=parse_key_values(args.attribute, "--attribute"),
        metadata=args.participant_metadata, room_config=config,
        ttl=datetime.timedelta(seconds=args.ttl),
    )
    return {"token": token, "room": args.room, "identity": args.identity,
            "agent_dispatch": dispatch}


async def main() -> dict:
    args = parse_args()
    setup_logging(args.verbose)
    if args.action == "create-token":
        return create_token(args)

    lk = api.LiveKitAPI(http_url(args.url), args.api_key, args.api_secret)
    try:
        if args.action == "remove-participant":
            await lk.room.remove_participant(
                api.RoomParticipantIdentity(room=args.room, identity=args.identity))
            return {"ok": True, "action": args.action, "room": args.room,
                    "identity": args.identity}
        if args.action == "delete-room":
            await lk.room.delete_room(api.DeleteRoomRequest(room=args.room))
            return {"ok": True, "action": args.action, "room": args.room}
        if args.action == "list-participants":
            res = await lk.room.list_participants(api.ListParticipantsRequest(room=args.room))
            people = [participant_json(p) for p in res.participants]
            return {"room": args.room, "count": len(people), "participants": people}
        raise ClientError(f"unknown action {args.action}")
    except api.TwirpError as e:
        why = e.message or f"HTTP {e.status}" + (" (wrong API key or secret?)" if e.status == 401 else "")
        raise ClientError(f"{args.action} failed: {why}", code=e.code, status=e.status)
    except OSError as e:  # aiohttp's connection errors derive from OSError
        raise ClientError(f"{args.action} failed: cannot reach {args.url}: {e}")
    finally:
        await lk.aclose()


if __name__ == "__main__":
    run_main(main)
