"""Scenario 1: an instance dies under load (SIGKILL); its subscribers resume on the other.

Two instances on one Redis, subscribers spread across both, a steady publisher retrying on
the other instance with the same Idempotency-Key. Full: 500 subscribers, 50 events/s.
"""

from __future__ import annotations

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
BEFORE, AFTER = scaled(1, 10), scaled(2, 20)  # seconds of load before and after the kill


async def test_subscribers_of_a_killed_instance_resume_on_the_other_losing_and_repeating_nothing(
    redis_server: RedisServer, instance: MakeInstance
) -> None:
    a, b = instance("a", redis_server.url), instance("b", redis_server.url)
    await a.start()
    await b.start()
    await ready(a)
    await ready(b)
    subscribers = spread(SUBSCRIBERS, [a, b])
    on_a = [s for s in subscribers if s.instance is a]
    publisher = Publisher([a, b], RATE)
    health = Health([a, b])

    async with anyio.create_task_group() as tasks:
        clients, load = Background(tasks), Background(tasks)
        for subscriber in subscribers:
            clients.start(subscriber.run)
        await all_connected(subscribers)
        load.start(publisher.run)
        load.start(health.run)
        await acked_at_least(publisher, RATE * BEFORE)

        a.kill()
        await until(lambda: all(s.connects >= 2 for s in on_a))  # every one of a's is back
        await acked_at_least(publisher, RATE * (BEFORE + AFTER))

        await load.finish()
        acked = publisher.acked_ids
        await delivered(subscribers, lambda s: acked)
        await clients.finish()

    report(
        "instance loss",
        subscribers=len(subscribers),
        acked=len(acked),
        moved=len(on_a),
        retried_posts=len(publisher.errors),
        refusals=len(publisher.refusals),
        healthz=health.answers,
        healthz_slowest_s=health.slowest,
    )
    assert not delivery_problems(subscribers, acked)
    assert not publisher.given_up, "every event was acknowledged, on one instance or the other"
    assert {r.status for r in publisher.refusals} <= {503}
    assert all(r.retry_after for r in publisher.refusals), "every 503 carries Retry-After"
    assert not health.failures, health.failures
    assert all(s.instance is b for s in on_a)
    assert len(acked) == len(publisher.acked), "one id per event: no retry published twice"
