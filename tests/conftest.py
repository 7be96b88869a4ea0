"""Real servers on real sockets: in-process uvicorn for most tests, a subprocess for the CLI.

Waits are on events under a bound (`within`), scaled by WSB_TEST_TIMEOUT_FACTOR.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any, Literal

import anyio
import httpx
import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from wsbroadcast.cli import build_server
from wsbroadcast.settings import Settings

FACTOR = float(os.environ.get("WSB_TEST_TIMEOUT_FACTOR", "1"))


def within(seconds: float) -> anyio.CancelScope:
    """A bound on a wait: fail the test rather than hang."""
    return anyio.fail_after(seconds * FACTOR)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    # uvloop, as the service runs: the default loop adds ~40 ms to each loopback request.
    return ("asyncio", {"use_uvloop": True})


def blog(post_id: str = "p1", action: str = "created", **extra: Any) -> dict[str, Any]:
    return {"type": "blog_update", "data": {"post_id": post_id, "action": action, **extra}}


def comment(post_id: str = "p1", comment_id: str = "c1", action: str = "created") -> dict[str, Any]:
    data = {"post_id": post_id, "comment_id": comment_id, "action": action}
    return {"type": "comment_update", "data": data}


def notice(message: str = "hello", level: str = "info") -> dict[str, Any]:
    return {"type": "system_notification", "data": {"message": message, "level": level}}


@dataclasses.dataclass
class Service:
    """A running wsbroadcast, and clients for it."""

    port: int
    settings: Settings
    app: Any
    http: httpx.AsyncClient

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str = "/ws", **params: str) -> str:
        query = str(httpx.QueryParams(params))
        return f"ws://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")

    def subscribe(
        self,
        path: str = "/ws",
        *,
        headers: dict[str, str] | None = None,
        subprotocols: list[str] | None = None,
        compression: Literal["deflate"] | None = None,
        **params: str,
    ) -> AbstractAsyncContextManager[ClientConnection]:
        return websockets.connect(
            self.ws_url(path, **params),
            additional_headers=headers,
            subprotocols=subprotocols,  # type: ignore[arg-type]
            compression=compression,
            open_timeout=10 * FACTOR,
        )

    async def publish(self, body: Any, **kwargs: Any) -> list[str]:
        response = await self.http.post("/events", json=body, **kwargs)
        assert response.status_code == 202, response.text
        ids: list[str] = response.json()["ids"]
        return ids

    async def head(self) -> str:
        response = await self.http.get("/events/head")
        assert response.status_code == 200
        head: str = response.json()["id"]
        return head

    async def metrics(self) -> str:
        return (await self.http.get("/metrics")).text


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 10) -> None:
    """Wait, with a bound, for a condition only observable from outside (a metric, say)."""
    with within(seconds):
        while not await check():  # noqa: ASYNC110 - nothing to await but the outside
            await anyio.sleep(0.05)


async def receive(ws: ClientConnection, seconds: float = 5) -> dict[str, Any]:
    """The next message that is not a heartbeat."""
    with within(seconds):
        while True:
            message: dict[str, Any] = orjson.loads(await ws.recv())
            if message["type"] != "heartbeat":
                return message


async def receive_n(ws: ClientConnection, count: int, seconds: float = 10) -> list[dict[str, Any]]:
    with within(seconds):
        return [await receive(ws, seconds) for _ in range(count)]


async def close_code(ws: ClientConnection, seconds: float = 5) -> int | None:
    """Read until the server closes; the close code it sent."""
    with within(seconds):
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    # Listening before uvicorn starts: early clients wait in the backlog, no polling.
    sock.listen(2048)
    return sock


@asynccontextmanager
async def running(
    settings: Settings | None = None,
    *,
    server_options: dict[str, Any] | None = None,
    **changes: Any,
) -> AsyncIterator[Service]:
    """Serve `settings` with real uvicorn on a free port, in this event loop."""
    settings = dataclasses.replace(settings or Settings(), **changes)
    sock = listening_socket()
    port = sock.getsockname()[1]
    settings = dataclasses.replace(settings, port=port)
    server = build_server(settings, log_config=None, **(server_options or {}))
    stopped = anyio.Event()

    async def serve() -> None:
        try:
            await server.serve([sock])
        finally:
            stopped.set()

    async with (
        anyio.create_task_group() as tasks,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10 * FACTOR) as http,
    ):
        tasks.start_soon(serve)
        try:
            yield Service(port, settings, server.app, http)
        finally:
            # Even when the test failed: a server cancelled mid-shutdown leaves
            # transports open, and the event loop then cannot close.
            server.should_exit = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(15 * FACTOR):
                await stopped.wait()
    sock.close()


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    async with running() as svc:
        yield svc


Start = Callable[..., AbstractAsyncContextManager[Service]]


@pytest.fixture
def start() -> Start:
    """`async with start(client_buffer=8) as svc:` a service with other settings."""
    return running


class RawClient:
    """A WebSocket client that can stop reading: a tiny receive buffer, no library."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    async def connect(cls, port: int, path: str = "/ws", rcvbuf: int = 4096) -> RawClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(
            sock,
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode(),
        )
        response = b""
        with within(5):
            while b"\r\n\r\n" not in response:
                response += await loop.sock_recv(sock, 1)  # byte by byte: leave frames unread
        assert response.startswith(b"HTTP/1.1 101"), response
        return cls(sock)

    async def read_to_end(self, seconds: float = 15) -> bytes:
        """What the server still sends, up to its close frame, a cut, or its EOF."""
        loop = asyncio.get_running_loop()
        data = bytearray()
        with within(seconds):
            while not _ends_in_close_frame(data):
                try:
                    chunk = await loop.sock_recv(self.sock, 65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
        self.sock.close()
        return bytes(data)


def _ends_in_close_frame(data: bytes | bytearray) -> bool:
    """Walk the server's (unmasked) frames: True once a whole close frame is in."""
    at = 0
    while at + 2 <= len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        header = 2
        if length == 126:
            header, length = 4, int.from_bytes(data[at + 2 : at + 4], "big")
        elif length == 127:
            header, length = 10, int.from_bytes(data[at + 2 : at + 10], "big")
        if at + header + length > len(data):
            return False
        if opcode == 0x8:
            return True
        at += header + length
    return False


def close_frame(code: int) -> bytes:
    """A server's close frame with `code` and no reason, as it appears on the wire."""
    return bytes([0x88, 2]) + code.to_bytes(2, "big")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Process:
    """`wsbroadcast` in a subprocess, its output collected as it comes."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.popen = subprocess.Popen(
            args,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)
            if "Uvicorn running on" in line:
                self._ready.set()
        self._ready.set()  # the process ended: stop waiting

    def wait_ready(self, seconds: float = 15) -> None:
        assert self._ready.wait(seconds * FACTOR), "the service did not start"
        assert self.popen.poll() is None, "".join(self.lines)

    def terminate(self, seconds: float = 10) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(seconds * FACTOR)

    @property
    def output(self) -> str:
        self._reader.join(5)
        return "".join(self.lines)


@contextmanager
def spawned(*flags: str, env: dict[str, str] | None = None) -> Iterator[Process]:
    process = Process([sys.executable, "-m", "wsbroadcast", *flags], env)
    try:
        yield process
    finally:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait(10)
        if process.popen.stdout:
            process.popen.stdout.close()


@pytest.fixture
def redis_server(tmp_path: Any) -> Iterator[Any]:
    """A redis-server of the test's own on a free port, so a test can stop and restart it."""
    from tests.redis_server import RedisServer  # it imports this module

    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()
