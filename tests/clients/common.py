"""Shared pieces of the end-user test clients.

Every client is a small CLI that logs to stderr and prints exactly one JSON
object on stdout when it ends. On failure that object is {"error": "..."}
(plus whatever else is known) and the exit status is non-zero.

Connection settings come from flags, falling back to the environment
(LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET) and then to the dev server
that scripts/livekit-server.sh starts (ws://127.0.0.1:7880, devkey/secret).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import sys
import warnings
from typing import Any, Awaitable, Callable, Optional

DEFAULT_URL = "ws://127.0.0.1:7880"
DEFAULT_API_KEY = "devkey"
DEFAULT_API_SECRET = "secret"

log = logging.getLogger("client")

# PyJWT warns that the dev secret ("secret") is a short HMAC key; that is known.
warnings.filterwarnings("ignore", message=".*HMAC key.*")


class ClientError(Exception):
    """An error to report as {"error": message, **extra} with a non-zero exit."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # The SDK's own loggers are chatty at INFO; keep them to warnings.
    if not verbose:
        for name in ("livekit", "livekit.api", "livekit.rtc", "aiohttp"):
            logging.getLogger(name).setLevel(logging.WARNING)


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as JSON on stdout too (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        emit({"error": f"usage: {message}"})
        sys.exit(2)


def emit(obj: dict) -> None:
    """Print the one JSON result line on stdout."""
    sys.stdout.write(json.dumps(obj, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("LIVEKIT_URL", DEFAULT_URL),
                   help="server URL, ws:// or http:// (env LIVEKIT_URL; default %(default)s)")
    p.add_argument("--api-key", default=os.environ.get("LIVEKIT_API_KEY", DEFAULT_API_KEY),
                   help="API key (env LIVEKIT_API_KEY; default: the dev key)")
    p.add_argument("--api-secret",
                   default=os.environ.get("LIVEKIT_API_SECRET", DEFAULT_API_SECRET),
                   help="API secret (env LIVEKIT_API_SECRET; default: the dev secret)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")


def add_join_args(p: argparse.ArgumentParser) -> None:
    """--url, --token, or the pieces to mint a token: key, secret, room, identity."""
    add_server_args(p)
    p.add_argument("--token", help="participant token; when absent one is minted from "
                   "--api-key/--api-secret/--room/--identity")
    p.add_argument("--room", help="room to join (to mint a token)")
    p.add_argument("--identity", help="participant identity (to mint a token)")
    p.add_argument("--name", help="display name (to mint a token)")
    p.add_argument("--attribute", action="append", default=[], metavar="KEY=VALUE",
                   help="participant attribute put in the minted token (repeatable)")


def parse_key_values(items: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ClientError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def http_url(url: str) -> str:
    """The server API speaks HTTP on the same port as the WebSocket signal."""
    if url.startswith("ws://"):
        return "http://" + url[len("ws://"):]
    if url.startswith("wss://"):
        return "https://" + url[len("wss://"):]
    return url


def mint_token(
    api_key: str,
    api_secret: str,
    room: str,
    identity: str,
    *,
    name: Optional[str] = None,
    attributes: Optional[dict[str, str]] = None,
    metadata: Optional[str] = None,
    room_config: Any = None,
    ttl: Optional[datetime.timedelta] = None,
) -> str:
    from livekit import api

    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_subscribe=True,
        can_publish_data=True,
        can_update_own_metadata=True,
    )
    tok = api.AccessToken(api_key, api_secret).with_identity(identity).with_grants(grants)
    if name:
        tok = tok.with_name(name)
    if attributes:
        tok = tok.with_attributes(attributes)
    if metadata:
        tok = tok.with_metadata(metadata)
    if room_config is not None:
        tok = tok.with_room_config(room_config)
    if ttl is not None:
        tok = tok.with_ttl(ttl)
    return tok.to_jwt()


def join_token(args: argparse.Namespace) -> str:
    if args.token:
        return args.token
    missing = [f for f in ("room", "identity") if not getattr(args, f)]
    if missing:
        raise ClientError("give --token, or --room and --identity (with --api-key/--api-secret) "
                          f"to mint one; missing: {', '.join('--' + m for m in missing)}")
    return mint_token(
        args.api_key, args.api_secret, args.room, args.identity,
        name=args.name, attributes=parse_key_values(args.attribute, "--attribute"),
    )


async def read_text_stream(reader: Any, entry: dict, now: Callable[[], float]) -> None:
    """Read a LiveKit text stream to its end into `entry`: its "text" and
    "chunks", "error" if it broke, then its final "attributes" and "at" = now()."""
    try:
        async for chunk in reader:
            entry["text"] += chunk
            entry["chunks"] += 1
    except Exception as e:  # report what broke the stream
        entry["error"] = str(e)
    entry["attributes"] = dict(reader.info.attributes or {})
    entry["at"] = now()


def run_main(main: Callable[[], Awaitable[dict]]) -> None:
    """Run an async main that returns the result dict; turn failures into
    {"error": ...} with exit status 1 (2 for usage errors, from argparse)."""
    try:
        result = asyncio.run(main())
    except ClientError as e:
        emit({"error": e.message, **e.extra})
        sys.exit(1)
    except KeyboardInterrupt:
        emit({"error": "interrupted"})
        sys.exit(130)
    except Exception as e:  # anything else is still reported as JSON
        log.debug("failure", exc_info=True)
        emit({"error": f"{type(e).__name__}: {e}"})
        sys.exit(1)
    emit(result)
    # The report is out and the room left: exit without the interpreter's
    # teardown, where the SDK's native runtime once aborted the process
    # ("panic in a function that cannot unwind") after a complete run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if result.get("error") else 0)
