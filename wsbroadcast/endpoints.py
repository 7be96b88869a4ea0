"""HTTP and WebSocket endpoints: parse, check, call the hub, map errors."""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from starlette.endpoints import WebSocketEndpoint
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import security
from .errors import (
    CloseCode,
    InvalidBody,
    Refused,
    ServiceError,
    TooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from .events import parse_batch, parse_filter_types
from .hub import Hub, Place, Send
from .settings import Settings
from .wire import Wire

logger = logging.getLogger("wsbroadcast")

RAW_SEND = "wsbroadcast.send"  # scope key: the server's own `send`, kept by `RawSend`
CLOSE_SECONDS = 2.0  # a close frame that cannot get out in this long: cut the connection
DRAIN_BYTES = 1 << 20  # read and dropped past the body limit before answering 413
MAX_KEY_LENGTH = 256
MAX_PARAM_LENGTH = 256


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: ServiceError) -> JSONResponse:
    return JSONResponse(
        {"error": error.code, "detail": error.detail}, error.status, headers=error.headers
    )


async def service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    logger.warning(
        "%s %s refused: %d %s: %s",
        request.method,
        request.url.path,
        exc.status,
        exc.code,
        exc.detail[:300],  # client text: cut before it reaches a log line
    )
    return error_response(exc)


# --- publishing -----------------------------------------------------------------------


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.endswith("+json") and "/" in media)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 once it passes `limit` bytes: never read whole.

    Past the limit, up to DRAIN_BYTES more are read and dropped so that a client that
    writes its whole body before reading gets the 413 rather than a reset connection.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + DRAIN_BYTES:
        raise TooLarge(f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit + DRAIN_BYTES:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise TooLarge(f"body is over the limit of {limit} bytes")
    return b"".join(chunks)


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw.lower() in {"false", "0"}:
        return False
    if raw.lower() in {"true", "1", ""}:
        return True
    raise InvalidBody(f"{name}: must be true or false")


async def publish(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    hub: Hub = request.app.state.hub
    # Auth comes before anything is read of the body.
    security.check_publisher(request.headers.get("authorization"), settings.publish_token)
    if not _is_json(request.headers.get("content-type", "")):
        raise UnsupportedMediaType(
            "content type must be application/json; with curl, use "
            'curl --json \'{"type": ..., "data": {...}}\' URL'
        )
    dry_run = _flag(request, "dry_run")
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise InvalidBody(f"Idempotency-Key: must be 1 to {MAX_KEY_LENGTH} characters")
    body = await read_body(request, settings.max_body_bytes)
    drafts = parse_batch(body, strict_types=settings.strict_types)
    if dry_run:
        return JSONResponse({"ids": []}, 200)
    appended = await hub.publish(drafts, key)
    logger.debug(
        "published %d event(s)%s", len(appended.ids), " (repeated key)" if appended.repeated else ""
    )
    return JSONResponse({"ids": appended.ids}, 202)


async def head(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    return JSONResponse({"id": await hub.broker.head()})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    if await hub.broker.ready():
        return JSONResponse({"status": "ready"})
    return error_response(Unavailable("the broker is unreachable"))


async def metrics(request: Request) -> Response:
    from .metrics import CONTENT_TYPE

    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)


# --- subscribing ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admission:
    """What a subscriber asked for, once checked."""

    since: str | None
    types: frozenset[str] | None
    post_id: str | None
    expires_at: float | None


def client_address(conn: HTTPConnection) -> str:
    # uvicorn's proxy headers setting has already put a trusted X-Forwarded-For here.
    return conn.client.host if conn.client else "unknown"


def admit(conn: HTTPConnection, subprotocols: tuple[str, ...] = ()) -> Admission:
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
        return Admission(
            since=_param(query.get("since"), "since"),
            types=parse_filter_types(query["types"]) if "types" in query else None,
            post_id=_param(query.get("post_id"), "post_id"),
            expires_at=expires_at,
        )
    except ValueError as exc:
        raise Refused(CloseCode.BAD_REQUEST, str(exc), InvalidBody(str(exc))) from None


def _param(raw: str | None, name: str) -> str | None:
    if raw is not None and not 0 < len(raw) <= MAX_PARAM_LENGTH:
        raise ValueError(f"{name}: must be 1 to {MAX_PARAM_LENGTH} characters")
    return raw


def cut(send: Send) -> None:
    """Drop a connection whose close cannot get out (the peer stopped reading).

    ASGI has no abort; uvicorn's `send` is a method of the protocol, which has the transport.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None:
        transport.abort()


async def say_goodbye(last: Callable[[], Awaitable[None]], stalled: bool, raw: Send) -> None:
    """Send the last frame within CLOSE_SECONDS, or cut: a peer that stopped reading
    never takes it, and after a stalled write it would only queue behind the stall."""
    if not stalled:
        with anyio.move_on_after(CLOSE_SECONDS) as late:
            with contextlib.suppress(WebSocketDisconnect, OSError):
                await last()
        if not late.cancelled_caught:
            return
    cut(raw)


class Subscribe(WebSocketEndpoint):
    """`WS /ws`: receive-only. The writer runs beside starlette's receive loop."""

    encoding = None

    async def dispatch(self) -> None:
        self.code: int = CloseCode.NORMAL
        async with anyio.create_task_group() as self.tasks:
            await super().dispatch()
            self.tasks.cancel_scope.cancel()

    async def on_connect(self, websocket: WebSocket) -> None:
        offered = tuple(websocket.scope.get("subprotocols", ()))
        # Browsers drop a connection whose offered subprotocol goes unanswered.
        subprotocol = security.SUBPROTOCOL if security.SUBPROTOCOL in offered else None
        hub: Hub = websocket.app.state.hub
        try:
            admission = admit(websocket, offered)
            place = hub.admit("ws")
        except Refused as refusal:
            # Accept first: a close before accept is an HTTP 403 the browser cannot read.
            self.code = refusal.code
            with contextlib.suppress(WebSocketDisconnect, OSError):
                await websocket.accept(subprotocol)
                await websocket.close(refusal.code, refusal.reason)
            logger.warning(
                "subscriber %s refused: %d %s",
                client_address(websocket),
                refusal.code,
                refusal.reason,
            )
            return
        await websocket.accept(subprotocol)
        logger.debug("subscriber %s connected", client_address(websocket))
        self.tasks.start_soon(self._write, websocket, admission, place)

    async def _write(self, websocket: WebSocket, admission: Admission, place: Place) -> None:
        hub: Hub = websocket.app.state.hub
        send: Send = websocket.scope.get(RAW_SEND) or websocket.send
        try:
            subscription = hub.subscribe(
                send,
                operator.attrgetter("message"),
                types=admission.types,
                post_id=admission.post_id,
                expires_at=admission.expires_at,
                wire=Wire.of(send),
            )
            code = await subscription.run(admission.since)
            if code is not None:
                self.code = code
                await say_goodbye(
                    functools.partial(websocket.close, code), subscription.stalled, send
                )
        finally:
            place.release()

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        code = self.code if self.code != CloseCode.NORMAL else close_code
        websocket.app.state.metrics.disconnected(code)
        logger.debug("subscriber %s gone: %d", client_address(websocket), code)
