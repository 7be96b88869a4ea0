"""Scenario 6: hostile subscribers. Clients that never read, clients that send messages over
4 KiB, and ping floods (pings sent, pongs never read) beside healthy subscribers.

The bound: the server's RSS grows by at most MEMORY_BOUND while they do it (each non-reader
costs at most its own buffer, WSB_CLIENT_BUFFER frames, until it is cut), and the healthy
subscribers' p99 latency stays within 2x of the same load without them.
Full: 50 non-readers, 1 KB events at 50/s for 60 s.
"""

from __future__ import annotations

import asyncio
import random
import socket

import anyio
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
    percentile,
    ready,
    report,
    scaled,
    spread,
)

pytestmark = pytest.mark.anyio

HEALTHY = scaled(20, 50)
NON_READERS = scaled(10, 50)
BIG_SENDERS = 5
PING_FLOODS = 5
RATE = scaled(50, 50)  # events/s
SIZE = 1024  # bytes of padding per event
PHASE = scaled(4, 60)  # seconds of load without, then with, the hostile clients
MEMORY_BOUND = 64 * 1024 * 1024  # RSS growth allowed while they do it
PING = b"\x89\x84\x00\x00\x00\x00ping"  # a masked ping frame (mask 0): a client's


async def raw_connect(instance: Instance, address: str) -> socket.socket:
    """A WebSocket handshake from `address` with a tiny receive buffer; frames left unread."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind((address, 0))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", instance.port))
        await loop.sock_sendall(
            sock,
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        response = b""
        with anyio.fail_after(10 * FACTOR):
            while b"\r\n\r\n" not in response:
                byte = await loop.sock_recv(sock, 1)  # byte by byte: leave frames unread
                if not byte:
                    raise ConnectionResetError("closed during the handshake")
                response += byte
        assert response.startswith(b"HTTP/1.1 101"), response
    except BaseException:
        sock.close()
        raise
    return sock


async def never_reader(
    instance: Instance, address: str, stop: anyio.Event, count: list[int]
) -> None:
    """Connect, read nothing, and come back when the server has had enough (~every 6 s)."""
    while not stop.is_set():
        try:
            sock = await raw_connect(instance, address)
        except OSError:
            await anyio.sleep(0.5)  # refused or reset: the backoff of a stubborn client
            continue
        try:
            count[0] += 1
            with anyio.move_on_after(random.uniform(5.5, 7)):  # a stall past the 5 s limit
                await stop.wait()
        finally:
            sock.close()


async def big_sender(
    instance: Instance, address: str, stop: anyio.Event, codes: list[int | None]
) -> None:
    """Send a message over 4 KiB, again and again: each time 1009 (or 4429: too often)."""
    while not stop.is_set():
        async with websockets.connect(
            f"{instance.ws_url}/ws",
            open_timeout=10 * FACTOR,
            max_queue=None,
            local_addr=(address, 0),
        ) as ws:
            try:
                await ws.send("x" * 5000)
                async for _ in ws:
                    pass
            except websockets.ConnectionClosed:
                pass
            codes.append(ws.close_code)
        if ws.close_code == 4429:
            await anyio.sleep(1)  # the contract: retry after backoff


async def ping_flood(instance: Instance, address: str, stop: anyio.Event, sent: list[int]) -> None:
    """Pings as fast as the server takes them, pongs never read."""
    sock = await raw_connect(instance, address)
    loop = asyncio.get_running_loop()
    try:
        while not stop.is_set():
            with anyio.move_on_after(0.5):
                await loop.sock_sendall(sock, PING * 64)
                sent[0] += 64
            await anyio.sleep(0.01)  # about 6,400 pings a second from each
    except OSError:
        pass  # cut by the server: that is one way to deal with it
    finally:
        sock.close()


async def test_non_readers_big_senders_and_ping_floods_leave_memory_bounded_and_healthy_p99(
    instance: MakeInstance,
) -> None:
    server = instance("one", "memory://", "--history-size", "5000")
    await server.start()
    await ready(server)
    healthy = spread(HEALTHY, [server])
    publisher = Publisher([server], RATE, size=SIZE)
    health = Health([server])
    non_readers, pings = [0], [0]
    big_codes: list[int | None] = []

    async with anyio.create_task_group() as tasks:
        clients, load, hostile = Background(tasks), Background(tasks), Background(tasks)
        for subscriber in healthy:
            clients.start(subscriber.run)
        await all_connected(healthy)
        load.start(publisher.run)
        load.start(health.run)
        await acked_at_least(publisher, RATE * PHASE, PHASE + 60)
        baseline = [x for s in healthy for x in s.latencies]
        for s in healthy:
            s.latencies.clear()
        rss_before = server.rss_bytes()
        rss_peak = rss_before

        # From addresses of their own (127.0.1.x): one address would soon get 4429.
        for n in range(NON_READERS):
            where = f"127.0.1.{1 + n // 10}"
            hostile.start(lambda stop, a=where: never_reader(server, a, stop, non_readers))
        for n in range(BIG_SENDERS):
            where = f"127.0.2.{1 + n}"
            hostile.start(lambda stop, a=where: big_sender(server, a, stop, big_codes))
        for n in range(PING_FLOODS):
            where = f"127.0.3.{1 + n}"
            hostile.start(lambda stop, a=where: ping_flood(server, a, stop, pings))
        target = len(publisher.acked) + RATE * PHASE
        with anyio.fail_after((PHASE + 60) * FACTOR):
            while len(publisher.acked) < target:
                rss_peak = max(rss_peak, server.rss_bytes())
                await anyio.sleep(0.2)  # the sampling interval of RSS
        await hostile.finish()
        await load.finish()
        acked = publisher.acked_ids
        await delivered(healthy, lambda s: acked)
        await clients.finish()
    under_attack = [x for s in healthy for x in s.latencies]

    p99_base, p99_attack = percentile(baseline, 0.99), percentile(under_attack, 0.99)
    report(
        "hostile subscribers",
        healthy=len(healthy),
        acked=len(acked),
        non_reader_connects=non_readers[0],
        big_messages=len(big_codes),
        pings_sent=pings[0],
        rss_before_mb=rss_before / 2**20,
        rss_growth_mb=(rss_peak - rss_before) / 2**20,
        p99_base_ms=p99_base * 1000,
        p99_attack_ms=p99_attack * 1000,
        post_p99_ms=percentile(publisher.ack_seconds, 0.99) * 1000,
        cpu_s=server.cpu_seconds(),
    )
    assert not delivery_problems(healthy, acked)
    assert not health.failures, health.failures
    assert 1009 in big_codes, "a message over 4 KiB: 1009"
    assert set(big_codes) <= {1009, 4429}, big_codes
    assert rss_peak - rss_before <= MEMORY_BOUND, "memory stays bounded"
    # Publish-to-delivery latency, client and server on a shared 2-core machine, is noisy
    # (a POST alone had a p99 of 1.5 s at a load average of 7): 2x, above a floor of 250 ms.
    assert p99_attack <= 2 * max(p99_base, 0.25 * FACTOR), (p99_base, p99_attack)
