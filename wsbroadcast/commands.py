"""`wsbroadcast publish`, `tail` and `schema`: the service's tools for a terminal.

Each returns an exit status; an error is one line on stderr. `serve` stays in `cli`.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson

COMMANDS = {
    "serve": "serve the service (the default; `wsbroadcast serve --help` for its settings)",
    "publish": "publish one event: wsbroadcast publish TYPE key=value ... ; prints the ids",
    "tail": "print each event as one JSON line, resuming across disconnects",
    "schema": "print the event types in force as GET /schema would (for code generators)",
}
DEFAULT_URL = "http://127.0.0.1:8000"
# A tail is refused for good on these close codes (the contract's table): say why, stop.
FINAL_CLOSES = {4400: "a bad query parameter", 4401: "subscriber token", 4403: "Origin refused"}


def usage() -> str:
    lines = [
        "usage: wsbroadcast [serve] [--host VALUE] [--port VALUE] ...",
        "       wsbroadcast {publish,tail,schema} ...",
        "",
        "commands:",
        *(f"  {name:<9} {what}" for name, what in COMMANDS.items()),
        "",
        "`wsbroadcast COMMAND --help` for a command's options.",
    ]
    return "\n".join(lines)


def _base_url(raw: str | None) -> str:
    url = raw or os.environ.get("WSB_URL") or DEFAULT_URL
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"--url: {url!r} is not a base URL like http://127.0.0.1:8000")
    return url.rstrip("/")


# --- publish --------------------------------------------------------------------------------


def _value(raw: str) -> Any:
    """A `key=value` value: JSON when it parses as JSON, else the string as typed."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw


def event_of(kind: str, pairs: Sequence[str], data_json: str | None) -> dict[str, Any]:
    """The event `publish` sends; ValueError names what is wrong."""
    data: dict[str, Any] = {}
    if data_json is not None:
        try:
            loaded = orjson.loads(data_json)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"--data: not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise ValueError("--data: must be a JSON object")
        data.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{pair!r}: write key=value")
        data[key] = _value(raw)
    return {"type": kind, "data": data}


def publish(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wsbroadcast publish",
        description="Publish one event; prints its id. Values are JSON when they parse, "
        "else strings: post_id=p1 count=3 tags='[\"a\"]' title='\"42\"'.",
    )
    parser.add_argument("type", help="the event type, e.g. blog_update")
    parser.add_argument("pairs", nargs="*", metavar="key=value", help="fields of data")
    parser.add_argument("--data", help="the whole data object as JSON (key=value wins)")
    parser.add_argument("--url", help=f"the service's base URL (WSB_URL, else {DEFAULT_URL})")
    parser.add_argument("--token", help="publish token (default: WSB_PUBLISH_TOKEN)")
    parser.add_argument("--idempotency-key", help="the key (default: a new one)")
    parser.add_argument(
        "--retry-for", type=float, default=10.0, help="seconds to retry (default 10)"
    )
    args = parser.parse_args(argv)
    from .client import Publisher, PublishError  # httpx only for this command

    try:
        url = _base_url(args.url)
        event = event_of(args.type, args.pairs, args.data)
    except ValueError as exc:
        return _fail("publish", str(exc))
    token = args.token or os.environ.get("WSB_PUBLISH_TOKEN") or None
    try:
        with Publisher(url, token=token, retry_for=args.retry_for) as publisher:
            ids = publisher.publish(event, idempotency_key=args.idempotency_key)
    except PublishError as exc:
        return _fail("publish", str(exc))
    for event_id in ids:
        print(event_id)
    return 0


# --- tail -------------------------------------------------------------------------------------


def _ws_url(base: str, params: dict[str, str]) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + "/ws"
    return urlunsplit((scheme, parts.netloc, path, urlencode(params), ""))


async def _tail(url: str, since: str | None, filters: dict[str, str], token: str | None) -> int:
    import anyio
    import websockets
    from websockets.asyncio.client import connect

    subprotocols = ["wsbroadcast", *([f"bearer.{token}"] if token else [])]
    delay = 0.1
    down = False  # in an outage already announced
    out = sys.stdout
    while True:
        params = {**filters, **({"since": since} if since else {})}
        try:
            async with connect(
                _ws_url(url, params),
                subprotocols=subprotocols,  # type: ignore[arg-type]
                open_timeout=10,
                max_size=None,
            ) as ws:
                delay, down = 0.1, False
                after = f" after {since}" if since else ""
                print(f"wsbroadcast tail: connected to {url}{after}", file=sys.stderr, flush=True)
                async for frame in ws:
                    message = orjson.loads(frame)
                    kind = message.get("type")
                    if "id" in message:
                        out.write(frame if isinstance(frame, str) else frame.decode())
                        out.write("\n")
                        out.flush()
                        since = message["id"]
                    elif kind == "heartbeat":
                        # How far this stream has got, filtered events included: resuming
                        # from there spares a quiet filtered tail a needless resync.
                        last = (message.get("data") or {}).get("last_id")
                        if isinstance(last, str) and last:
                            since = last
                    elif kind == "resync":
                        head = (message.get("data") or {}).get("head")
                        print(
                            "wsbroadcast tail: history no longer holds where this tail was; "
                            "events may have been missed",
                            file=sys.stderr,
                            flush=True,
                        )
                        if isinstance(head, str) and head:
                            since = head
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            if code in FINAL_CLOSES:
                reason = closed.rcvd.reason if closed.rcvd else ""
                return _fail("tail", f"closed with {code} ({FINAL_CLOSES[code]}): {reason}")
        except websockets.InvalidURI as exc:
            return _fail("tail", str(exc))
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            # The service is down or restarting: say so once, and keep trying.
            if not down:
                print(f"wsbroadcast tail: cannot reach {url} ({exc or type(exc).__name__}); "
                      "retrying", file=sys.stderr, flush=True)  # fmt: skip
                down = True
        # Jittered backoff, so tails cut off together do not come back together.
        await anyio.sleep(random.uniform(delay / 2, delay))
        delay = min(delay * 2, 5.0)


def tail(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wsbroadcast tail",
        description="Print each event as one JSON line; resumes with since across "
        "disconnects and restarts, missing nothing still in history.",
    )
    parser.add_argument("--url", help=f"the service's base URL (WSB_URL, else {DEFAULT_URL})")
    parser.add_argument("--since", help="start after this id")
    parser.add_argument("--types", help="comma list of types")
    parser.add_argument("--post-id", help="only this post's events (and those with no post)")
    parser.add_argument("--token", help="subscriber JWT (default: WSB_TOKEN)")
    args = parser.parse_args(argv)
    import anyio

    try:
        url = _base_url(args.url)
    except ValueError as exc:
        return _fail("tail", str(exc))
    filters = {
        name: value
        for name, value in (("types", args.types), ("post_id", args.post_id))
        if value is not None
    }
    token = args.token or os.environ.get("WSB_TOKEN") or None
    try:
        return anyio.run(_tail, url, args.since, filters, token)
    except KeyboardInterrupt:
        return 0


# --- schema -------------------------------------------------------------------------------------


def schema(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="wsbroadcast schema",
        description="Print the body of GET /schema for these settings, no server needed.",
    )
    parser.add_argument("--event-types", help="the types file (default: WSB_EVENT_TYPES)")
    parser.add_argument("--strict-types", default="true", help="true or false (default true)")
    args = parser.parse_args(argv)
    from .schemas import EventTypes, SchemaFileError, document

    path = args.event_types or os.environ.get("WSB_EVENT_TYPES") or None
    try:
        types = EventTypes.from_file(path)
    except SchemaFileError as exc:
        return _fail("schema", f"WSB_EVENT_TYPES: {path!r} {exc}", status=2)
    strict = args.strict_types.strip().lower() not in {"0", "false", "no", "off"}
    sys.stdout.write(orjson.dumps(document(types, strict), option=orjson.OPT_INDENT_2).decode())
    sys.stdout.write("\n")
    return 0


def _fail(command: str, message: str, status: int = 1) -> int:
    print(f"wsbroadcast {command}: {message}", file=sys.stderr)
    return status


RUN = {"publish": publish, "tail": tail, "schema": schema}
