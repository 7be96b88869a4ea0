"""The ASGI app: routes at `/` and `/api/v1`, the lifespan that owns the hub, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router, WebSocketRoute

from . import endpoints, openapi, readers_endpoint, sse
from .brokers import from_url
from .errors import MethodNotAllowed, NotFound, ServiceError
from .hub import Hub
from .metrics import Metrics
from .proxy import ForwardedFor
from .responses import error_response
from .schemas import EventTypes
from .security import RateLimiter
from .settings import Settings, load_settings

DRAIN_SECONDS = 3.0


def routes() -> list[BaseRoute]:
    return [
        WebSocketRoute("/ws", endpoints.Subscribe),
        Route("/sse", sse.subscribe, methods=["GET", "OPTIONS"]),
        Route("/events", endpoints.publish, methods=["POST"]),
        Route("/events/head", endpoints.head, methods=["GET"]),
        Route("/healthz", endpoints.healthz, methods=["GET"]),
        Route("/readyz", endpoints.readyz, methods=["GET"]),
        Route("/metrics", endpoints.metrics, methods=["GET"]),
        Route("/schema", openapi.schema, methods=["GET"]),
        Route("/openapi.json", openapi.openapi, methods=["GET"]),
        Route("/readers", readers_endpoint.readers, methods=["GET", "OPTIONS"]),
    ]


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no route, wrong method) in the contract's error form."""
    assert isinstance(exc, HTTPException)
    path = request.url.path[:100]
    if exc.status_code == 405:
        error: ServiceError = MethodNotAllowed(
            f"{request.method[:16]} is not allowed on {path}", dict(exc.headers or {})
        )
    elif exc.status_code == 404:
        error = NotFound(f"nothing here: {path}")
    else:
        error = ServiceError(exc.detail)
        error.status, error.code = exc.status_code, "http_error"
    return error_response(error)


def create_app(settings: Settings | None = None) -> Starlette:
    """The service for `settings` (the defaults when none)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        broker = from_url(
            settings.broker_url,
            settings.history_size,
            settings.history_bytes,
            settings.backlog_bytes,
            settings.history_ttl,
        )
        hub = Hub(
            broker,
            app.state.metrics,
            client_buffer=settings.client_buffer,
            max_connections=settings.max_connections,
            heartbeat_seconds=settings.heartbeat_seconds,
        )
        app.state.hub = hub
        try:
            async with anyio.create_task_group() as tasks:
                await tasks.start(hub.run)
                if settings.outbox_url:
                    from .outbox import Relay  # psycopg only when asked for

                    relay = Relay(
                        settings.outbox_url,
                        hub,
                        app.state.metrics,
                        strict_types=settings.strict_types,
                        types=app.state.types,
                    )
                    await tasks.start(relay.run)
                await tasks.start(hub.readers.run)
                yield
                await hub.close_all(DRAIN_SECONDS)
                tasks.cancel_scope.cancel()
        finally:
            await broker.aclose()

    app = Starlette(
        # No trailing-slash redirects: they echo the `Host` header into `Location`.
        routes=[*routes(), Mount("/api/v1", app=Router(routes(), redirect_slashes=False))],
        middleware=[Middleware(ForwardedFor, trusted=settings.forwarded_allow_ips)],
        exception_handlers={ServiceError: endpoints.service_error, HTTPException: http_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    app.state.settings = settings
    app.state.types = EventTypes.from_file(settings.event_types)
    app.state.metrics = Metrics()
    app.state.limiter = RateLimiter(settings.connect_rate)
    return app


def __getattr__(name: str) -> Any:
    # `uvicorn wsbroadcast.app:app`: built on first use, from the environment.
    if name == "app":
        return create_app(load_settings())
    raise AttributeError(name)
