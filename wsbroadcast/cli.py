"""`wsbroadcast`: flags and environment to Settings to a uvicorn server; signals; exit codes."""

from __future__ import annotations

import gc
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from . import commands, transports
from .app import DRAIN_SECONDS, create_app
from .logs import log_config
from .settings import Settings, SettingsError, load_settings

logger = logging.getLogger("wsbroadcast")


def uvicorn_options() -> dict[str, Any]:
    """The uvicorn settings the service runs with (the benchmark gives its baseline the same)."""
    return {
        "ws": "websockets-sansio",  # sends complete without suspending while the peer reads
        "ws_per_message_deflate": False,  # compression more than doubles memory per connection
        "ws_max_size": 4096,  # a client message over 4 KiB: 1009
        "ws_ping_interval": 20.0,  # pings find a dead peer within a minute
        "ws_ping_timeout": 20.0,
        "http": "httptools",
        "loop": "uvloop",
        "lifespan": "on",
        # 10,000 browsers reconnecting at once after a deploy overflowed uvicorn's 2,048:
        # a dropped SYN is retried 1, 3, 7, 15 s later. The kernel caps it at somaxconn.
        "backlog": 4096,
    }


class Server(uvicorn.Server):
    """uvicorn's server, draining subscribers with 1001 before its own shutdown."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # SIGTERM is how a supervisor asks us to stop: drain and exit 0. uvicorn would
        # re-raise the signal once stopped, and the process would end with 143.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting first, so no one arrives during the drain
        hub = getattr(self.app.state, "hub", None)
        if hub is not None:
            await hub.close_all(DRAIN_SECONDS)
        await super().shutdown(sockets)


def protocols(settings: Settings) -> dict[str, Any]:
    """uvicorn's protocols with the service's hooks, or uvicorn's own when it lacks a name
    the hooks rely on: then frames go through the plain ASGI send, slower but right."""
    missing = transports.check_uvicorn()
    options: dict[str, Any] = {}
    if not any(name.startswith("WebSocket") for name in missing):
        options["ws"] = transports.WebSocketProtocol
    if not any(name.startswith("HttpTools") for name in missing):
        options["http"] = transports.http_protocol(settings.header_timeout)
    if missing:
        logger.warning(
            "uvicorn %s lacks %s: running without the service's hooks into it (slower "
            "fan-out%s); install the uvicorn version pyproject.toml names",
            uvicorn.__version__,
            ", ".join(missing),
            "" if "http" in options else ", no request header timeout",
        )
    return options


def check_fd_limit(settings: Settings) -> None:
    """Warn when the file limit cannot hold WSB_MAX_CONNECTIONS subscribers."""
    needed = settings.max_connections + transports.FD_HEADROOM
    if transports.FD_LIMIT < needed:
        logger.warning(
            "the open file limit is %d, below WSB_MAX_CONNECTIONS (%d) plus %d: subscribers "
            "past %d are refused with 1013 / 503; raise it (ulimit -n %d) for more",
            transports.FD_LIMIT,
            settings.max_connections,
            transports.FD_HEADROOM,
            transports.subscriber_limit(settings.max_connections),
            needed,
        )


def build_server(settings: Settings, app: Starlette | None = None, **overrides: Any) -> Server:
    app = app or create_app(settings)
    options = uvicorn_options()
    options.update(protocols(settings))
    options.update(
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=log_config(settings),
        # The access log would write a line per publish; it stays for debugging.
        access_log=settings.log_level in ("debug", "trace"),
        proxy_headers=False,  # the app's own `proxy.ForwardedFor` reads X-Forwarded-For
        server_header=False,
        timeout_graceful_shutdown=DRAIN_SECONDS,
    )
    options.update(overrides)
    return Server(uvicorn.Config(app, **options), app)


def tune_gc() -> None:
    """Keep the cyclic collector off what lives long: a third of the CPU at 5,000 connects.

    Every connection adds about 150 long-lived objects, and each full collection walks them
    all, so with the defaults a wave of connections pays for many walks of a growing heap
    (bench/README.md). Collect young objects after 10,000 allocations rather than 700, and
    leave what is alive at startup (modules, the app) out of every collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    # `wsbroadcast publish ...`, `tail`, `schema`; anything else (`serve` or none) serves.
    if args and args[0] in commands.RUN:
        sys.exit(commands.RUN[args[0]](args[1:]))
    if args[:1] in (["-h"], ["--help"]):
        print(commands.usage() + "\n")
    elif args[:1] == ["serve"]:
        args = args[1:]
    try:
        settings = load_settings(args)
    except SettingsError as exc:
        print(f"wsbroadcast: {exc}", file=sys.stderr)
        sys.exit(2)
    server = build_server(settings)
    check_fd_limit(settings)
    tune_gc()
    server.run()
    sys.exit(0 if server.started else 1)
