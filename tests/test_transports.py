"""The delivery seam: uvicorn's names checked, the fallback when they go, and the bounds
the protocol hooks put on what a client can make the server hold."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import weakref
from typing import Any

import anyio
import httpx
import orjson
import pytest
import websockets

from tests.conftest import (
    RawClient,
    Service,
    Start,
    blog,
    comment,
    eventually,
    free_port,
    notice,
    receive,
    receive_n,
    spawned,
    within,
)
from wsbroadcast import hub, transports
from wsbroadcast.subscription import Subscription
from wsbroadcast.transports import ASGITransport, UvicornWebSocket

pytestmark = pytest.mark.anyio


def test_the_installed_uvicorn_has_every_name_the_transport_relies_on() -> None:
    missing = transports.check_uvicorn()
    assert not missing, f"uvicorn lacks {', '.join(missing)}: see wsbroadcast/transports.py"


def only_transport(svc: Service) -> object:
    (subscription,) = svc.app.state.hub._subscribers
    return subscription.transport


async def test_a_websocket_subscriber_is_written_to_straight_through_its_socket(
    service: Service,
) -> None:
    async with service.subscribe() as ws:
        await eventually(lambda: _has_subscriber(service))
        assert isinstance(only_transport(service), UvicornWebSocket)
        ids = await service.publish(blog())
        assert (await receive(ws))["id"] == ids[0]


async def _has_subscriber(svc: Service) -> bool:
    return bool(svc.app.state.hub._subscribers)


async def test_without_uvicorns_names_the_service_warns_and_serves_through_asgi_send(
    start: Start, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(transports, "WEBSOCKET_NAMES", (*transports.WEBSOCKET_NAMES, "gone"))
    with caplog.at_level(logging.WARNING, logger="wsbroadcast"):
        async with start() as svc, svc.subscribe() as ws:
            await eventually(lambda: _has_subscriber(svc))
            assert isinstance(only_transport(svc), ASGITransport)
            ids = await svc.publish([blog("p1"), blog("p2")])
            assert [(await receive(ws))["id"] for _ in ids] == ids
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if "WebSocketsSansIOProtocol.gone" in w], warnings


async def test_through_asgi_send_a_reader_sees_the_peer_leave_with_its_code(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transports, "WEBSOCKET_NAMES", (*transports.WEBSOCKET_NAMES, "gone"))
    async with start() as svc:
        async with svc.subscribe() as ws:
            await eventually(lambda: _has_subscriber(svc))
            await ws.send("read and ignored")
            await svc.publish(blog())
            assert (await receive(ws))["type"] == "blog_update"
        await eventually(lambda: _no_subscriber(svc))
        assert 'wsb_disconnects_total{code="1000"} 1.0' in await svc.metrics()


async def _no_subscriber(svc: Service) -> bool:
    return not svc.app.state.hub._subscribers


class CountingSocket:
    """A subscriber's real socket, its writes counted."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.socket.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.socket, name)


def count_writes(svc: Service) -> dict[str | None, CountingSocket]:
    """Each subscriber's socket writes, by its post_id filter."""
    spies = {}
    for subscription in svc.app.state.hub._subscribers:
        transport = subscription.transport
        assert isinstance(transport, UvicornWebSocket)
        spies[subscription.post_id] = transport._socket = CountingSocket(transport._socket)
    return spies


async def test_the_events_of_a_batch_reach_each_subscriber_in_one_write(
    service: Service,
) -> None:
    """A send costs the kernel far more than its bytes: a subscriber gets the events of a
    batch it wants in one write, whether every subscriber wants all of them or not."""
    async with service.subscribe() as everything:
        await eventually(lambda: _subscribers(service, 1))
        spies = count_writes(service)
        ids = await service.publish([blog("p1"), blog("p2"), comment("p1")])
        assert [m["id"] for m in await receive_n(everything, 3)] == ids
        assert spies[None].writes == 1
        async with (
            service.subscribe(post_id="p1") as p1,
            service.subscribe(post_id="p2", types="blog_update,comment_update") as p2,
        ):
            await eventually(lambda: _subscribers(service, 3))
            spies = count_writes(service)
            b1, b2, c1, c2 = ids = await service.publish(
                [blog("p1"), blog("p2"), comment("p1"), comment("p2")]
            )
            assert [m["id"] for m in await receive_n(everything, 4)] == ids
            assert [m["id"] for m in await receive_n(p1, 2)] == [b1, c1]
            assert [m["id"] for m in await receive_n(p2, 2)] == [b2, c2]  # two groups, merged
            assert [spy.writes for spy in spies.values()] == [1, 1, 1]
            # A notice (indexed by type alone) starts a run of its own: one write more.
            *_, n = await service.publish([blog("p1"), notice()])
            assert [m["id"] for m in await receive_n(p1, 2)][-1] == n
            assert spies["p1"].writes == 3


async def test_a_runs_bound_counts_each_subscribers_share_not_the_whole_batch(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch for many posts brings each post's subscribers a few events: the bound on a
    run is what one subscriber gets in one write, so a batch spread over posts still
    reaches each in one write; one share past the bound is cut, in order."""
    monkeypatch.setattr(hub, "RUN_EVENTS", 3)
    async with (
        service.subscribe(post_id="p1") as p1,
        service.subscribe(post_id="p2") as p2,
        service.subscribe(post_id="p3") as p3,
    ):
        await eventually(lambda: _subscribers(service, 3))
        spies = count_writes(service)
        ids = await service.publish([blog(f"p{1 + k % 3}") for k in range(9)])
        for k, ws in enumerate((p1, p2, p3)):
            assert [m["id"] for m in await receive_n(ws, 3)] == ids[k::3]
        assert [spy.writes for spy in spies.values()] == [1, 1, 1]  # 3 runs of 3 before
        ids = await service.publish([blog("p1") for _ in range(4)])
        assert [m["id"] for m in await receive_n(p1, 4)] == ids
        assert spies["p1"].writes == 3  # a share of 3, then one of 1


async def test_a_fan_out_to_many_lets_the_server_run_between_its_chunks(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every YIELD_EVERY offers the broadcaster yields: what else waits (a POST, a
    handshake) runs before the rest of the subscribers are written to."""
    monkeypatch.setattr(hub, "YIELD_EVERY", 2)
    clients = [await RawClient.connect(service.port) for _ in range(6)]
    try:
        await eventually(lambda: _subscribers(service, 6))
        first, *_, last = service.app.state.hub._subscribers
        ran, reached = asyncio.Event(), asyncio.Event()
        seen_by_last: list[bool] = []

        class First(CountingSocket):
            def write(self, data: bytes) -> None:
                asyncio.get_running_loop().call_soon(ran.set)  # runs once the hub yields
                super().write(data)

        class Last(CountingSocket):
            def write(self, data: bytes) -> None:
                seen_by_last.append(ran.is_set())
                reached.set()
                super().write(data)

        first.transport._socket = First(first.transport._socket)
        last.transport._socket = Last(last.transport._socket)
        await service.publish(blog())
        with within(5):
            await reached.wait()
        assert seen_by_last == [True]
    finally:
        for client in clients:
            client.sock.close()


# -- what an idle subscriber costs (issue 19) -------------------------------------------


async def test_an_idle_subscriber_is_one_task_and_keeps_no_handshake_request(
    service: Service,
) -> None:
    """On uvicorn, an idle subscriber is its connection's own task, with no reader or task
    group beside it, and the parsed handshake (2 KB of headers) is not kept."""

    def requests() -> int:
        # Only those still reachable: earlier tests' garbage goes whenever the collector
        # runs, which once fell between the two counts.
        gc.collect()
        return sum(type(o) is websockets.http11.Request for o in gc.get_objects())

    tasks, kept = len(asyncio.all_tasks()), requests()
    clients = [await RawClient.connect(service.port) for _ in range(20)]
    try:
        await eventually(lambda: _subscribers(service, 20))
        assert len(asyncio.all_tasks()) - tasks == 20
        assert requests() - kept == 0
    finally:
        for client in clients:
            client.sock.close()


async def _subscribers(svc: Service, n: int) -> bool:
    return len(svc.app.state.hub._subscribers) == n


async def test_a_client_that_sends_without_end_is_still_read_and_answered(
    service: Service,
) -> None:
    """Nothing reads a subscriber's messages: they are dropped as they come, so reading
    never pauses (a ping still gets its pong), nothing piles up, and the peer's close is
    seen with its code."""
    async with service.subscribe() as ws:
        await eventually(lambda: _has_subscriber(service))
        for i in range(2000):
            await ws.send(f"message {i}")
        with within(5):
            await (await ws.ping())
        (subscription,) = service.app.state.hub._subscribers
        assert not subscription.transport._protocol.queue.items
        await service.publish(blog())
        assert (await receive(ws))["type"] == "blog_update"
    await eventually(lambda: _no_subscriber(service))
    assert 'wsb_disconnects_total{code="1000"} 1.0' in await service.metrics()


async def test_handshakes_take_turns_and_every_one_is_answered(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most HANDSHAKES WebSocket handshakes are in progress at once (a reconnect storm
    must leave room for live events); the rest wait their turn, none is lost, and one
    that leaves while waiting gives up its place."""
    monkeypatch.setattr(transports, "HANDSHAKES", 2)
    in_progress, most = 0, 0
    handle_connect = transports.WebSocketProtocol.handle_connect
    handshake_over = transports.WebSocketProtocol._handshake_over

    def counted_connect(self: transports.WebSocketProtocol, event: Any) -> None:
        nonlocal in_progress, most
        in_progress += 1
        most = max(most, in_progress)
        handle_connect(self, event)

    def counted_over(self: transports.WebSocketProtocol) -> None:
        nonlocal in_progress
        if self.handshakes is not None:
            in_progress -= 1
        handshake_over(self)

    monkeypatch.setattr(transports.WebSocketProtocol, "handle_connect", counted_connect)
    monkeypatch.setattr(transports.WebSocketProtocol, "_handshake_over", counted_over)
    loop = asyncio.get_running_loop()
    socks = []
    for _ in range(40):  # every request sent before any answer is read: all at once
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", service.port))
        socks.append(sock)
    for sock in socks:
        await loop.sock_sendall(sock, RAW_HANDSHAKE)
    for sock in socks[:10]:  # these leave, most of them while waiting their turn
        sock.close()
    clients = [RawClient(sock) for sock in socks[10:]]
    try:
        for client in clients:
            response = b""
            with within(5):
                while b"\r\n\r\n" not in response:
                    response += await loop.sock_recv(client.sock, 1)
            assert response.startswith(b"HTTP/1.1 101"), response
        await eventually(lambda: _subscribers(service, 30))
        assert most <= 2
        assert in_progress == 0
        last = await RawClient.connect(service.port)  # no place was lost
        clients.append(last)
        await eventually(lambda: _subscribers(service, 31))
    finally:
        for client in clients:
            client.sock.close()


RAW_HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


# -- what a client can make the server hold ------------------------------------------------


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def ping_frame(payload: bytes) -> bytes:
    """A client's (masked) ping frame."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x89, 0x80 | len(payload)]) + mask + masked


@pytest.mark.parametrize("heartbeat", ["25", "0"], ids=["heartbeats-on", "heartbeats-off"])
async def test_a_client_that_pings_and_never_reads_is_cut_and_costs_little(
    heartbeat: str,
) -> None:
    port = free_port()
    env = {"WSB_PORT": str(port), "WSB_HEARTBEAT_SECONDS": heartbeat}
    with spawned(env=env) as server:
        server.wait_ready()
        before = rss(server.popen.pid)
        client = await RawClient.connect(port, rcvbuf=4096)
        frame = ping_frame(b"x" * 125)
        loop = asyncio.get_running_loop()
        cut = False
        with within(15):  # the contract's 5 s stall, and the time to fill the buffers
            while not cut:
                try:
                    await loop.sock_sendall(client.sock, frame * 64)
                except (ConnectionResetError, BrokenPipeError):
                    cut = True
        grown = rss(server.popen.pid) - before
        client.sock.close()
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
    assert grown < 20 * 1024 * 1024, f"the server grew {grown / 2**20:.1f} MiB"


def half_open(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never ends
    sock.setblocking(False)
    return sock


async def dropped(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    try:
        while await loop.sock_recv(sock, 4096):
            pass
    except ConnectionResetError:
        pass


async def test_connections_that_never_finish_their_headers_are_dropped(start: Start) -> None:
    async with start(header_timeout=1.0) as svc:
        socks = [half_open(svc.port) for _ in range(300)]
        try:
            # Meanwhile the service answers as usual.
            assert (await svc.http.get("/healthz")).status_code == 200
            await svc.publish(blog())
            with within(10):
                async with anyio.create_task_group() as tasks:
                    for sock in socks:
                        tasks.start_soon(dropped, sock)
        finally:
            for sock in socks:
                sock.close()
        assert (await svc.http.get("/healthz")).status_code == 200


async def test_headers_sent_a_byte_at_a_time_get_the_same_deadline(start: Start) -> None:
    async with start(header_timeout=1.0) as svc:
        loop = asyncio.get_running_loop()
        sock = socket.create_connection(("127.0.0.1", svc.port))
        sock.setblocking(False)
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 1000
        sent = 0
        try:
            with within(10):
                while sent < len(request):
                    try:
                        await loop.sock_sendall(sock, request[sent : sent + 1])
                    except (ConnectionResetError, BrokenPipeError):
                        break
                    sent += 1
                    with anyio.move_on_after(0.05):  # a slow client's pace, not a wait
                        try:
                            if not await loop.sock_recv(sock, 1):
                                break
                        except ConnectionResetError:  # the server aborted: cut
                            break
        finally:
            sock.close()
        assert sent < len(request)  # cut before it could finish: about 20 bytes a second


async def test_a_handshake_websockets_refuses_gets_its_answer_and_the_connection_ends(
    service: Service,
) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.create_connection(("127.0.0.1", service.port))
    sock.setblocking(False)
    try:
        # A request line over websockets' 8 KiB: it answers 414, which uvicorn never wrote.
        await loop.sock_sendall(
            sock,
            (
                f"GET /ws?x={'a' * 9000} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode(),
        )
        answer = b""
        with within(5):
            while chunk := await loop.sock_recv(sock, 4096):
                answer += chunk
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 414"), answer[:80]


# -- heartbeats name how far the stream has got ---------------------------------------------


async def test_a_filtered_subscriber_on_a_quiet_post_resumes_from_the_heartbeats_last_id(
    start: Start,
) -> None:
    async with start(heartbeat_seconds=0.3, history_size=5) as svc:
        async with svc.subscribe(post_id="quiet") as ws:
            ids = await svc.publish([blog(f"busy{i}") for i in range(20)])
            with within(5):
                while True:
                    message = orjson.loads(await ws.recv())
                    assert message["type"] == "heartbeat", message
                    if message["data"]["last_id"] == ids[-1]:
                        break
            assert message["data"]["interval"] == 0.3
        # 20 unrelated events pushed the id it started at out of history: no resync.
        async with svc.subscribe(post_id="quiet", since=ids[-1]) as ws:
            later = await svc.publish(blog("quiet"))
            assert (await receive(ws))["id"] == later[0]


async def test_an_sse_heartbeat_of_a_filtered_stream_carries_its_position_as_id(
    start: Start,
) -> None:
    async with start(heartbeat_seconds=0.3) as svc:
        params = {"post_id": "quiet"}
        async with svc.http.stream("GET", "/sse", params=params) as response:
            lines = response.aiter_lines()
            ids = await svc.publish([blog("busy1"), blog("busy2")])
            seen: list[str] = []
            with within(5):
                async for line in lines:
                    seen.append(line)
                    if line == f"id: {ids[-1]}":
                        break
            heartbeat = await anext(lines)
        assert heartbeat.startswith(": heartbeat"), seen
        assert not [line for line in seen if line.startswith("data:")]


async def test_an_unfiltered_sse_heartbeat_has_no_id_line(start: Start) -> None:
    async with start(heartbeat_seconds=0.2) as svc:
        async with svc.http.stream("GET", "/sse") as response:
            lines = response.aiter_lines()
            with within(5):
                async for line in lines:
                    if line.startswith(": heartbeat"):
                        break
                    assert not line.startswith("id:"), line


async def test_a_finished_connection_is_freed_at_once_not_left_to_the_collector(
    start: Start,
) -> None:
    """With the cyclic collector off, every object of a WebSocket or SSE subscriber the
    server made is gone once its client has left: no reference cycle keeps a connection
    for the collector's rarest pass (the soak's RSS grew by tens of MB that way)."""

    def connection_objects() -> list[weakref.ref[object]]:
        found = []
        for thing in gc.get_objects():
            if isinstance(thing, transports.HTTPProtocol):
                scope = getattr(thing, "scope", None) or {}
                if scope.get("path") not in ("/ws", "/sse"):
                    continue  # the test's own keep-alive connection, alive all along
            elif not isinstance(thing, transports.WebSocketProtocol | Subscription):
                continue
            found.append(weakref.ref(thing))
        return found

    gc.collect()
    gc.disable()
    try:
        async with start() as svc, httpx.AsyncClient(timeout=5) as http:
            async with (
                websockets.connect(svc.ws_url()) as ws,
                http.stream("GET", f"{svc.url}/sse") as stream,
            ):
                lines = stream.aiter_lines()
                await svc.publish(blog())
                assert (await receive(ws))["type"] == "blog_update"
                with within(5):
                    while not (await anext(lines)).startswith("data:"):
                        pass
                made = connection_objects()
                kinds = {type(ref()).__name__ for ref in made}
                assert {"WebSocketProtocol", "HTTPProtocol", "Subscription"} <= kinds, kinds

            async def all_freed() -> bool:
                return all(ref() is None for ref in made)

            await eventually(all_freed, 5)
    finally:
        gc.enable()
