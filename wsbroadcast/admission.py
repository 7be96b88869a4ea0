"""Who may subscribe: the checks both `/ws` and `/sse` make, in the contract's order.

Subscribing on, rate limit, origin, JWT, query parameters, then a connection slot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from . import security
from .errors import CloseCode, InvalidBody, Refused, Unavailable
from .events import parse_filter_types
from .hub import Hub, Slot
from .settings import Settings
from .subscription import Request
from .transports import Kind

MAX_PARAM_LENGTH = 256
MAX_REWIND = 100
FLAGS = {"1": True, "true": True, "0": False, "false": False}


@dataclass(frozen=True, slots=True)
class Admission:
    """A subscriber let in: what it asked for, and its slot under the connection limit."""

    request: Request
    slot: Slot


def client_address(conn: HTTPConnection) -> str:
    # proxy.ForwardedFor has already put a trusted proxy's X-Forwarded-For client here.
    return conn.client.host if conn.client else "unknown"


def admit(conn: HTTPConnection, kind: Kind, subprotocols: tuple[str, ...] = ()) -> Admission:
    """Check a subscriber in the contract's order; Refused with its code otherwise."""
    state = conn.app.state
    settings: Settings = state.settings
    if not settings.websocket_enabled:
        raise Refused(CloseCode.TOO_SLOW, "subscribing is off", Unavailable("subscribing is off"))
    state.limiter.check(client_address(conn), time.monotonic())
    security.check_origin(conn.headers.get("origin"), settings.allowed_origins)
    query = conn.query_params
    credentials = security.Credentials(
        subprotocols=subprotocols,
        cookie_header=conn.headers.get("cookie"),
        query_token=query.get("token"),
        authorization=conn.headers.get("authorization"),
    )
    expires_at = security.verify_subscriber(credentials.token(), settings.jwt_secret)
    try:
        since = _param(query.get("since"), "since")
        if kind == "sse":  # the browser's own resume header wins over `since`
            since = conn.headers.get("last-event-id") or since
        post_id = _param(query.get("post_id"), "post_id")
        readers = parse_flag(query.get("readers"), "readers")
        rewind = parse_rewind(query.get("rewind"))
        if readers and post_id is None:
            raise ValueError("readers: counts are per post: give post_id too")
        request = Request(
            since=since,
            types=parse_filter_types(query["types"]) if "types" in query else None,
            post_id=post_id,
            expires_at=expires_at,
            # With `since`, `rewind` is checked, then ignored (contract).
            rewind=None if since is not None else rewind,
            readers=readers,
        )
    except ValueError as exc:
        raise Refused(CloseCode.BAD_REQUEST, str(exc), InvalidBody(str(exc))) from None
    hub: Hub = state.hub
    return Admission(request, hub.admit(kind))


def parse_rewind(raw: str | None) -> int | None:
    """`rewind=N`, 1 to 100; ValueError otherwise."""
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= MAX_REWIND):
        raise ValueError(f"rewind: must be a whole number from 1 to {MAX_REWIND}")
    return int(raw)


def parse_flag(raw: str | None, name: str) -> bool:
    """A query flag: 1, true, 0 or false (absent: false); ValueError otherwise."""
    if raw is None:
        return False
    value = FLAGS.get(raw.lower())
    if value is None:
        raise ValueError(f"{name}: must be 1, true, 0 or false")
    return value


def _param(raw: str | None, name: str) -> str | None:
    if raw is not None and not 0 < len(raw) <= MAX_PARAM_LENGTH:
        raise ValueError(f"{name}: must be 1 to {MAX_PARAM_LENGTH} characters")
    return raw
