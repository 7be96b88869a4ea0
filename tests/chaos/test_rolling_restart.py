"""Scenario 3: a rolling restart under load: SIGTERM each of two instances in turn, each back
before the next goes. Subscribers see 1001 and resume on the other; no POST is refused.

Full: 500 subscribers, 50 events/s.
"""

from __future__ import annotations

import time

import anyio
import pytest

from tests.chaos.conftest import MakeInstance
from tests.chaos.harness import (
    Background,
    Health,
    Publisher,
    acked_at_least,
    all_connected,
    delivered,
    delivery_problems,
    ready,
    report,
    scaled,
    spread,
    until,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

SUBSCRIBERS = scaled(100, 500)
RATE = scaled(25, 50)  # events/s
BETWEEN = scaled(1, 5)  # seconds of load before, between and after the restarts


async def test_a_rolling_restart_closes_with_1001_loses_nothing_and_refuses_no_post(
    redis_server: RedisServer, instance: MakeInstance
) -> None:
    a, b = instance("a", redis_server.url), instance("b", redis_server.url)
    await a.start()
    await b.start()
    await ready(a)
    await ready(b)
    subscribers = spread(SUBSCRIBERS, [a, b], sse_every=5)
    publisher = Publisher([a, b], RATE)
    health = Health([a, b])
    statuses: list[int] = []
    drains: list[float] = []

    async with anyio.create_task_group() as tasks:
        clients, load = Background(tasks), Background(tasks)
        for subscriber in subscribers:
            clients.start(subscriber.run)
        await all_connected(subscribers)
        load.start(publisher.run)
        load.start(health.run)
        target = RATE * BETWEEN
        await acked_at_least(publisher, target)
        for going in (a, b):
            began = time.monotonic()
            statuses.append(await going.terminate())
            drains.append(time.monotonic() - began)
            # Everyone it served is back, on the other one.
            await until(lambda g=going: all(s.instance is not g for s in subscribers))
            await going.start()
            await ready(going)
            target += RATE * BETWEEN
            await acked_at_least(publisher, target)
        await load.finish()
        acked = publisher.acked_ids
        await delivered(subscribers, lambda s: acked)
        await clients.finish()

    closes = [c for s in subscribers for c in s.closes]
    report(
        "rolling restart",
        subscribers=len(subscribers),
        acked=len(acked),
        closes_1001=closes.count(1001),
        other_closes=len(closes) - closes.count(1001),
        posts_retried=len(publisher.errors),
        slowest_drain_s=max(drains),
        healthz=health.answers,
    )
    assert statuses == [0, 0], "SIGTERM: exit 0"
    assert not delivery_problems(subscribers, acked)
    assert not publisher.refusals, "no POST refused while one instance was up"
    assert not publisher.given_up
    assert set(closes) == {1001}, "every subscriber of a stopping instance got 1001"
    assert not health.failures, health.failures
