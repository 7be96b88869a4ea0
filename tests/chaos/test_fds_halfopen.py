"""Scenarios 4 and 5: running out of file descriptors, and half-open and slow clients.

4. With `ulimit -n 256` and 400 clients trying to connect, the service holds 192 subscribers
   (64 below the limit) and refuses the rest with 1013, keeps answering /healthz and
   publishing, never crashes or spins, and serves new clients once others leave. Accepts that
   hit the limit in the first burst are dropped by libuv itself (see docs/reliability.md).
5. 500 connections from one address that send half a handshake and stall, and a client that
   sends its headers a byte a second: /healthz, publishing and healthy subscribers go on,
   and every stalled socket is dropped within STALL_BOUND seconds.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable

import anyio
import orjson
import pytest
import websockets

from tests.chaos.conftest import MakeInstance
from tests.chaos.harness import (
    FACTOR,
    Background,
    Health,
    Instance,
    Publisher,
    acked_at_least,
    all_connected,
    delivered,
    delivery_problems,
    log_errors,
    ready,
    report,
    scaled,
    spread,
)

pytestmark = pytest.mark.anyio

FD_LIMIT = 256
CLIENTS = 400
HALF_OPEN = scaled(500, 500)
STALL_BOUND = 15.0  # seconds: a socket that has not sent its headers by then is dropped
IDLE_CPU = 0.25  # share of one core the server may use while it sits at its limit


# --- 4: file descriptors -------------------------------------------------------------


async def try_subscribe(
    instance: Instance, number: int, hold: anyio.Event, held: Callable[[], None]
) -> str:
    """One client's outcome: `subscribed` (held until `hold`), a close code, or how it failed."""
    address = f"127.0.4.{1 + number // 20}"  # 20 per address: under the rate limit's burst
    try:
        async with websockets.connect(
            f"{instance.ws_url}/ws", open_timeout=20 * FACTOR, local_addr=(address, 0)
        ) as ws:
            try:
                with anyio.move_on_after(1 * FACTOR):  # a refusal closes at once
                    await ws.recv()
            except websockets.ConnectionClosed:
                return f"closed {ws.close_code}"
            held()
            await hold.wait()
            return "subscribed"
    except TimeoutError:
        return "backlog"  # never accepted within the bound: the kernel's backlog
    except websockets.InvalidStatus as exc:
        return f"http {exc.response.status_code}"
    except (OSError, websockets.InvalidHandshake, websockets.ConnectionClosed) as exc:
        return f"broken: {type(exc).__name__}"


async def test_at_the_fd_limit_the_service_refuses_cleanly_keeps_serving_and_recovers(
    instance: MakeInstance,
) -> None:
    server = instance("fds", "memory://", "--heartbeat-seconds", "0.5", fd_limit=FD_LIMIT)
    await server.start()
    await ready(server)
    publisher = Publisher([server], 10)
    health = Health([server])
    hold = anyio.Event()
    outcomes: list[str] = []
    holding = 0
    settled = anyio.Event()  # every client has its answer, or holds its subscription

    def check() -> None:
        if len(outcomes) + holding == CLIENTS:
            settled.set()

    def held() -> None:
        nonlocal holding
        holding += 1
        check()

    async def client(number: int) -> None:
        outcome = await try_subscribe(server, number, hold, held)
        outcomes.append(outcome)  # "subscribed" only after `hold`: counted by held() before
        check()

    async with anyio.create_task_group() as tasks:
        load = Background(tasks)
        load.start(publisher.run)
        load.start(health.run)
        async with anyio.create_task_group() as crowd:
            for number in range(CLIENTS):
                crowd.start_soon(client, number)
            with anyio.fail_after(60 * FACTOR):
                await settled.wait()
                # Every client has its answer, but the server may still be closing the
                # refused ones' sockets: the burst ends when its descriptors are free again.
                while server.open_fds() > FD_LIMIT - 16:  # noqa: ASYNC110
                    await anyio.sleep(0.05)  # polled: another process's descriptors
            burst_failures = len(health.failures)  # /healthz while 400 handshakes raced
            cpu_before, began = server.cpu_seconds(), time.monotonic()
            with anyio.move_on_after(2):  # two seconds at the limit
                await anyio.sleep_forever()
            idle_cpu = (server.cpu_seconds() - cpu_before) / (time.monotonic() - began)
            published = len(publisher.acked)
            await acked_at_least(publisher, published + 10)  # publishing goes on at the limit
            hold.set()  # the subscribers leave
        # A new client is served once the others left.
        async with websockets.connect(f"{server.ws_url}/ws", open_timeout=10 * FACTOR) as ws:
            message = orjson.loads(await ws.recv())  # an event (publishing goes on) or a heartbeat
            assert message["type"] in {"heartbeat", "blog_update"}, message
        await load.finish()

    tally = Counter(o if not o.startswith("broken") else "broken" for o in outcomes)
    report(
        "fd limit",
        fd_limit=FD_LIMIT,
        clients=CLIENTS,
        outcomes=dict(tally),
        idle_cpu=idle_cpu,
        healthz=health.answers,
        healthz_failures=len(health.failures),
        acked=len(publisher.acked),
    )
    assert server.process is not None and server.process.popen.poll() is None, "still running"
    # The service holds its subscribers 64 below the file limit (WSB_MAX_CONNECTIONS is
    # clamped) and refuses the rest with 1013. What it cannot refuse cleanly: in the first
    # burst, accepts that hit the limit are dropped by libuv (uvloop) itself, which accepts
    # and closes a connection it has no descriptor for rather than spin ("broken" here: no
    # HTTP answer). docs/reliability.md says so, and the limit to set.
    assert set(tally) <= {"subscribed", "closed 1013", "http 503", "backlog", "broken"}, tally
    assert tally["subscribed"] == FD_LIMIT - 64, tally
    assert tally["closed 1013"] + tally["http 503"] > 0, tally
    assert burst_failures <= 3, health.failures[:5]
    assert not health.failures[burst_failures:], health.failures[burst_failures:][:5]
    assert not publisher.refusals and not publisher.given_up, publisher.refusals[:3]
    assert idle_cpu < IDLE_CPU, f"the server spins at its limit: {idle_cpu:.0%} of a core"
    errors = log_errors(server.log())
    assert not [e for e in errors if "Traceback" in e], errors[:5]
    assert len(errors) < 20, f"{len(errors)} error lines: one per refusal is a flood"


# --- 5: half-open and slow clients ----------------------------------------------------


async def half_open(instance: Instance) -> socket.socket:
    """A socket that sent half a WebSocket handshake, and then nothing."""
    sock = socket.socket()
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", instance.port))
        await loop.sock_sendall(sock, b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websock")
    except BaseException:
        sock.close()
        raise
    return sock


async def dropped(sock: socket.socket) -> float:
    """Wait for the server to drop the socket (EOF or reset); when it did."""
    loop = asyncio.get_running_loop()
    try:
        while await loop.sock_recv(sock, 4096):
            pass
    except OSError:
        pass
    return time.monotonic()


async def slowloris(instance: Instance, stop: anyio.Event) -> float | None:
    """Send a request's headers a byte a second; when the server dropped it, if it did."""
    request = (
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    )  # no final blank line: it never ends
    sock = socket.socket()
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", instance.port))
        for byte in request:
            try:
                await loop.sock_sendall(sock, bytes([byte]))
            except OSError:
                return time.monotonic()
            with anyio.move_on_after(1):  # a byte a second
                await stop.wait()
            if stop.is_set():
                return None
        return None
    finally:
        sock.close()


async def test_half_open_and_byte_a_second_clients_are_dropped_and_hurt_no_one(
    instance: MakeInstance,
) -> None:
    server = instance("stall", "memory://")
    await server.start()
    await ready(server)
    healthy = spread(20, [server])
    publisher = Publisher([server], 20)
    health = Health([server])
    stalled: list[socket.socket] = []
    try:
        async with anyio.create_task_group() as tasks:
            clients, load = Background(tasks), Background(tasks)
            for subscriber in healthy:
                clients.start(subscriber.run)
            await all_connected(healthy)
            load.start(publisher.run)
            load.start(health.run)
            began = time.monotonic()
            for _ in range(HALF_OPEN):  # all from 127.0.0.1
                stalled.append(await half_open(server))
            slow_result: list[float | None] = []
            slow_done = anyio.Event()

            async def slow(stop: anyio.Event) -> None:
                slow_result.append(await slowloris(server, stop))
                slow_done.set()

            load.start(slow)
            drops: list[float] = []
            with anyio.move_on_after(STALL_BOUND * FACTOR + 5):
                async with anyio.create_task_group() as waits:
                    for sock in stalled:
                        waits.start_soon(lambda s=sock: _record(drops, s))
            with anyio.move_on_after(STALL_BOUND * FACTOR):  # its own deadline, from its connect
                await slow_done.wait()
            await acked_at_least(publisher, 20 * 3)
            await load.finish()
            acked = publisher.acked_ids
            await delivered(healthy, lambda s: acked)
            await clients.finish()
    finally:
        for sock in stalled:
            sock.close()

    report(
        "half-open and slow clients",
        half_open=len(stalled),
        dropped=len(drops),
        slowest_drop_s=max(drops, default=began) - began,
        slowloris_dropped=slow_result[0] is not None if slow_result else None,
        acked=len(acked),
        healthz=health.answers,
    )
    assert not delivery_problems(healthy, acked)
    assert not health.failures, health.failures[:5]
    assert not publisher.refusals and not publisher.given_up
    assert len(drops) == len(stalled), f"{len(stalled) - len(drops)} stalled sockets still open"
    assert max(drops) - began <= STALL_BOUND * FACTOR
    assert slow_result and slow_result[0] is not None, "the byte-a-second client was dropped"


async def _record(drops: list[float], sock: socket.socket) -> None:
    drops.append(await dropped(sock))
