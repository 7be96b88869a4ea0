"""Live readers across instances on a real redis-server: counts sum, a killed instance
drops out, a Redis restart recovers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import websockets
from anyio.to_thread import run_sync

from tests.conftest import FACTOR, Service, eventually, free_port, running, spawned
from tests.redis_server import RedisServer
from tests.test_readers import next_count, readers_of
from tests.test_redis import ready
from wsbroadcast.brokers.redis_counts import HASH_SECONDS

pytestmark = pytest.mark.anyio

RIGHT_WITHIN = 2.0  # contract: a count is right within 2 s of a change on any instance
DEAD_WITHIN = 15.0  # contract: an instance that dies without a goodbye drops out within 15 s


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


async def until_counts(expected: dict[str, int], *services: Service, seconds: float) -> None:
    async def reached() -> bool:
        for service in services:
            for post_id, count in expected.items():
                if await readers_of(service, post_id) != count:
                    return False
        return True

    await eventually(reached, seconds)


async def total(service: Service) -> int:
    count: int = (await service.http.get("/readers")).json()["total"]
    return count


async def test_counts_sum_across_instances_and_a_goodbye_takes_them_out_at_once(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    async with running(broker_url=url, connect_rate=1000.0) as a, AsyncExitStack() as on_a:
        watcher = await on_a.enter_async_context(a.subscribe(post_id="p1", readers="1"))
        assert (await next_count(watcher))["data"]["readers"] == 1
        await on_a.enter_async_context(a.subscribe(post_id="p1"))
        await on_a.enter_async_context(a.subscribe())
        async with running(broker_url=url, connect_rate=1000.0) as b, AsyncExitStack() as on_b:
            await ready(a, b)
            for post_id in ("p1", "p1", "p2"):
                await on_b.enter_async_context(b.subscribe(post_id=post_id))
            await until_counts({"p1": 4, "p2": 1}, a, b, seconds=RIGHT_WITHIN)
            assert await total(a) == await total(b) == 6
            top = (await a.http.get("/readers", params={"top": "2"})).json()["posts"]
            assert top == [{"post_id": "p1", "readers": 4}, {"post_id": "p2", "readers": 1}]
            with_both = await next_count(watcher, RIGHT_WITHIN * FACTOR + 1)
            while with_both["data"]["readers"] != 4:
                with_both = await next_count(watcher, RIGHT_WITHIN * FACTOR + 1)
            # Local metric: posts read on this instance only.
            assert "wsb_readers_posts 1.0" in await a.metrics()
            assert "wsb_readers_posts 2.0" in await b.metrics()
        # B shut down: its goodbye removes its counts, no expiry to wait for.
        await until_counts({"p1": 2, "p2": 0}, a, seconds=RIGHT_WITHIN)
        assert (await next_count(watcher, RIGHT_WITHIN * FACTOR + 1))["data"]["readers"] == 2


async def test_an_instance_killed_with_sigkill_drops_out_within_15_s(
    redis_server: RedisServer,
) -> None:
    assert HASH_SECONDS + 1 < DEAD_WITHIN
    port = free_port()
    flags = ["--port", str(port), "--broker-url", redis_server.url, "--connect-rate", "1000"]
    async with running(broker_url=redis_server.url) as a, a.subscribe(post_id="p1"):
        with spawned(*flags) as b:
            await run_sync(b.wait_ready)
            url = f"ws://127.0.0.1:{port}/ws?post_id=p1"
            async with (
                websockets.connect(url, open_timeout=10 * FACTOR),
                websockets.connect(url, open_timeout=10 * FACTOR),
            ):
                await until_counts({"p1": 3}, a, seconds=RIGHT_WITHIN + 5)  # B is a new process
                b.popen.kill()  # no goodbye
                await run_sync(b.popen.wait)
                await until_counts({"p1": 1}, a, seconds=DEAD_WITHIN)
        assert await total(a) == 1


async def test_a_redis_outage_leaves_each_instance_its_own_count_until_redis_is_back(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    async with (
        running(broker_url=url, connect_rate=1000.0) as a,
        running(broker_url=url, connect_rate=1000.0) as b,
        AsyncExitStack() as stack,
    ):
        await ready(a, b)
        await stack.enter_async_context(a.subscribe(post_id="p1"))
        for _ in range(2):
            await stack.enter_async_context(b.subscribe(post_id="p1"))
        await until_counts({"p1": 3}, a, b, seconds=RIGHT_WITHIN)
        await run_sync(redis_server.kill)
        await until_counts({"p1": 1}, a, seconds=5)
        await until_counts({"p1": 2}, b, seconds=5)
        await run_sync(redis_server.start)  # empty: every hash is rewritten
        await until_counts({"p1": 3}, a, b, seconds=10)
        assert await total(a) == await total(b) == 3
