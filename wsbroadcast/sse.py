"""`GET /sse`: the same stream as Server-Sent Events, for networks that block WebSocket."""

from __future__ import annotations

import logging

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import transports
from .admission import Admission, admit, client_address
from .errors import CloseCode, Refused
from .hub import Hub
from .responses import error_response
from .security import origin_allowed
from .settings import Settings
from .subscription import Departure

logger = logging.getLogger("wsbroadcast")

RETRY_MS = 3000  # EventSource's reconnect delay: a little jitter-free pause is fine here


def cors_headers(origin: str | None, settings: Settings) -> dict[str, str]:
    """CORS for an allowed browser origin only; `Vary` so caches keep them apart."""
    headers = {"Vary": "Origin"}
    if origin and origin != "null" and origin_allowed(origin, settings.allowed_origins):
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Allow-Credentials"] = "true"
    return headers


async def subscribe(request: Request) -> Response | EventStream:
    settings: Settings = request.app.state.settings
    cors = cors_headers(request.headers.get("origin"), settings)
    if request.method == "OPTIONS":  # preflight for a fetch-based client sending a header
        return Response(
            status_code=204,
            headers={
                **cors,
                "Access-Control-Allow-Methods": "GET",
                "Access-Control-Allow-Headers": "Authorization, Last-Event-ID, Cache-Control",
                "Access-Control-Max-Age": "600",
            },
        )
    try:
        admission = admit(request, "sse")
    except Refused as refusal:
        request.app.state.metrics.disconnected(refusal.code)
        logger.warning(
            "sse subscriber %s refused: %d %s",
            client_address(request),
            refusal.http_error.status,
            refusal.reason,
        )
        response = error_response(refusal.http_error)
        response.headers.update(cors)
        return response
    return EventStream(request.app.state.hub, admission, cors)


class EventStream:
    """An ASGI response that lives as long as the subscription."""

    def __init__(self, hub: Hub, admission: Admission, cors: dict[str, str]) -> None:
        self.hub = hub
        self.admission = admission
        self.headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache, no-transform"),
            (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
            *((k.lower().encode(), v.encode()) for k, v in cors.items()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        code: int | None = None
        slot = self.admission.slot
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.headers})
            await send(
                {
                    "type": "http.response.body",
                    "body": f"retry: {RETRY_MS}\n\n".encode(),
                    "more_body": True,
                }
            )
            transport = transports.for_sse(scope, send)  # type: ignore[arg-type]
            departure = Departure()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_until_disconnect, receive, departure)
                request = self.admission.request
                code = await self.hub.serve(transport, request, slot, departure.started)
                if code is None:  # the peer left: end the response all the same
                    await transport.close(CloseCode.NORMAL)
                # The response is complete, so `receive` answers http.disconnect and the
                # watcher returns (nothing cancelled: see Departure). One that does not
                # return in time is.
                tasks.cancel_scope.deadline = anyio.current_time() + transports.CLOSE_SECONDS
        finally:
            slot.release()
            self.hub.metrics.disconnected(code if code is not None else CloseCode.NORMAL)


async def _until_disconnect(receive: Receive, departure: Departure) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    departure.left()  # its writer returns, and the response ends
