"""HTTP and WebSocket endpoints: parse, check, call the hub, map errors."""

from __future__ import annotations

import contextlib
import logging

import anyio
from starlette.endpoints import WebSocketEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import security, transports
from .admission import Admission, admit, client_address
from .errors import (
    InvalidBody,
    Refused,
    ServiceError,
    TooLarge,
    Unavailable,
    UnsupportedMediaType,
)
from .events import parse_batch
from .hub import Hub
from .responses import JSONResponse, error_response
from .settings import Settings
from .subscription import Departure

logger = logging.getLogger("wsbroadcast")

DRAIN_BYTES = 1 << 20  # read and dropped past the body limit before answering 413
MAX_KEY_LENGTH = 256


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
    if key is not None and not dry_run:
        # A repeat answers the first 202 whatever its body (contract): before reading it.
        ids = await hub.broker.seen(key)
        if ids is not None:
            logger.debug("published %d event(s) (repeated key)", len(ids))
            return JSONResponse({"ids": ids}, 202)
    body = await read_body(request, settings.max_body_bytes)
    drafts = parse_batch(body, strict_types=settings.strict_types, types=request.app.state.types)
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


class Subscribe(WebSocketEndpoint):
    """`WS /ws`: receive-only. Where the connection tells of the peer's leaving itself
    (uvicorn, see transports), the subscriber runs in the connection's own task and
    nothing reads: one task per subscriber, no task group (issue 19: memory per idle
    connection). Elsewhere a watcher reads `receive` beside it, as SSE does."""

    encoding = None

    async def dispatch(self) -> None:
        websocket = WebSocket(self.scope, receive=self.receive, send=self.send)
        admission = await self.on_connect(websocket)
        if isinstance(admission, Admission):
            code = await self._serve(websocket, admission)
        else:
            code = admission
        await self.on_disconnect(websocket, code)

    async def on_connect(self, websocket: WebSocket) -> Admission | int:  # type: ignore[override]
        """Accept, or accept and close with the refusal's code (a close before accept is
        an HTTP 403 the browser cannot read); the admission, or the code."""
        offered = tuple(websocket.scope.get("subprotocols", ()))
        # Browsers drop a connection whose offered subprotocol goes unanswered.
        subprotocol = security.SUBPROTOCOL if security.SUBPROTOCOL in offered else None
        try:
            admission = admit(websocket, "ws", offered)
        except Refused as refusal:
            with contextlib.suppress(WebSocketDisconnect, OSError):
                await websocket.accept(subprotocol)
                await websocket.close(refusal.code, refusal.close_reason)
            logger.warning(
                "subscriber %s refused: %d %s",
                client_address(websocket),
                refusal.code,
                refusal.reason,
            )
            return refusal.code
        try:
            await websocket.accept(subprotocol)
        except BaseException:
            admission.slot.release()
            raise
        logger.debug("subscriber %s connected", client_address(websocket))
        return admission

    async def _serve(self, websocket: WebSocket, admission: Admission) -> int:
        """The subscriber's life; its close code, or the peer's when the peer left."""
        hub: Hub = websocket.app.state.hub
        departure = Departure()
        transport = transports.for_websocket(websocket.scope, websocket.send)
        request, slot = admission.request, admission.slot
        if transports.watch_departure(websocket.scope, departure.left):
            code = await hub.serve(transport, request, slot, departure.started)
        else:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_until_disconnect, websocket, departure)
                code = await hub.serve(transport, request, slot, departure.started)
                # Closed, the peer's answer ends the watcher (nothing cancelled: see
                # Departure). One that does not return in time is cancelled.
                tasks.cancel_scope.deadline = anyio.current_time() + transports.CLOSE_SECONDS
        return code if code is not None else departure.code

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        websocket.app.state.metrics.disconnected(close_code)
        logger.debug("subscriber %s gone: %d", client_address(websocket), close_code)


async def _until_disconnect(websocket: WebSocket, departure: Departure) -> None:
    """Read and drop what the peer sends until it leaves (contract: read and ignored)."""
    while (message := await websocket.receive())["type"] != "websocket.disconnect":
        pass
    departure.left(int(message.get("code") or 1005))
