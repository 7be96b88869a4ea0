"""Scenario 2: Redis goes away under load and comes back, with its data and then empty.

Two instances, subscribers on both, a publisher at a steady rate that retries a 503 as the
contract's client does. Full: 5 s outages at 50 events/s.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import httpx
import pytest
import websockets

from tests.chaos.conftest import MakeInstance
from tests.chaos.harness import (
    FACTOR,
    Background,
    Health,
    Instance,
    Publisher,
    Subscriber,
    acked_at_least,
    all_connected,
    delivered,
    delivery_problems,
    epoch_of,
    ready,
    report,
    scaled,
    spread,
    until,
)
from tests.conftest import free_port
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

SUBSCRIBERS = scaled(60, 200)
RATE = scaled(25, 50)  # events/s
OUTAGE = scaled(2, 5)  # seconds Redis is away
BEFORE, AFTER = scaled(1, 5), scaled(2, 10)  # seconds of load around the outage


async def outage(
    redis: RedisServer, instances: list[Instance], publisher: Publisher
) -> dict[str, float]:
    """Kill Redis for OUTAGE seconds under load; how long until each part answered again."""
    refused_before = len(publisher.refusals)
    redis.kill()
    began = time.monotonic()
    await until(lambda: len(publisher.refusals) > refused_before, 10)
    first_503 = time.monotonic() - began
    await anyio.sleep(OUTAGE)  # the fault's length: Redis stays away this long
    await anyio.to_thread.run_sync(redis.start)
    back = time.monotonic()
    for each in instances:
        await ready(each)
    return {"first_503_s": first_503, "ready_again_s": time.monotonic() - back}


async def run_outage(
    redis: RedisServer, instance: MakeInstance
) -> tuple[list[Subscriber], Publisher, Health, dict[str, float], str]:
    a, b = instance("a", redis.url), instance("b", redis.url)
    await a.start()
    await b.start()
    await ready(a)
    await ready(b)
    subscribers = spread(SUBSCRIBERS, [a, b], sse_every=4)
    publisher = Publisher([a, b], RATE, retry_for=OUTAGE + 30)
    health = Health([a, b])
    async with anyio.create_task_group() as tasks:
        clients, load = Background(tasks), Background(tasks)
        for subscriber in subscribers:
            clients.start(subscriber.run)
        await all_connected(subscribers)
        load.start(publisher.run)
        load.start(health.run)
        await acked_at_least(publisher, RATE * BEFORE)
        epoch = epoch_of(next(iter(publisher.acked_ids)))
        figures = await outage(redis, [a, b], publisher)
        await acked_at_least(publisher, RATE * (BEFORE + OUTAGE + AFTER))
        await load.finish(seconds=OUTAGE + 60)
        acked = publisher.acked_ids
        if any(epoch_of(i) != epoch for i in acked):  # an empty Redis: a new epoch
            await until(lambda: all(s.resyncs for s in subscribers))
        await delivered(subscribers, lambda s: {i for i in acked if epoch_of(i) != epoch} or acked)
        await clients.finish()
    return subscribers, publisher, health, figures, epoch


def assert_refusals_are_503_with_retry_after(publisher: Publisher) -> None:
    assert publisher.refusals, "publishing was refused while Redis was away"
    assert {r.status for r in publisher.refusals} == {503}, publisher.refusals[:3]
    assert all(r.retry_after for r in publisher.refusals), "every 503 carries Retry-After"
    assert not publisher.given_up, "every refused event was accepted once Redis was back"


async def test_redis_down_for_seconds_and_back_with_its_data_loses_and_repeats_nothing(
    tmp_path: Path, instance: MakeInstance
) -> None:
    redis = RedisServer(free_port(), tmp_path, aof=True)  # comes back with its stream
    redis.start()
    try:
        subscribers, publisher, health, figures, _ = await run_outage(redis, instance)
    finally:
        redis.stop()
    acked = publisher.acked_ids
    report(
        "redis down, back with its data",
        subscribers=len(subscribers),
        acked=len(acked),
        refused_503=len(publisher.refusals),
        healthz=health.answers,
        **figures,
    )
    assert not delivery_problems(subscribers, acked)
    assert all(not s.resyncs for s in subscribers), "the same stream: no resync"
    assert_refusals_are_503_with_retry_after(publisher)
    assert not health.failures, health.failures


async def test_redis_back_empty_gives_each_subscriber_one_resync_then_every_new_event_once(
    redis_server: RedisServer, instance: MakeInstance
) -> None:
    subscribers, publisher, health, figures, epoch = await run_outage(redis_server, instance)
    acked = publisher.acked_ids
    new = {i for i in acked if epoch_of(i) != epoch}
    report(
        "redis down, back empty",
        subscribers=len(subscribers),
        acked=len(acked),
        acked_new_epoch=len(new),
        answered_503_yet_appended=len({i for s in subscribers for i in s.seen - acked}),
        refused_503=len(publisher.refusals),
        healthz=health.answers,
        **figures,
    )
    assert new, "events were acknowledged in the new epoch"
    # The window docs/redis.md describes: Redis ran an append, then died before its answer
    # reached the service, which answered 503. The event went out on the lost stream; the
    # retry's Idempotency-Key died with Redis, so the retry was published again, in the new
    # stream. Such an event is allowed only if a try of it was refused or unanswered.
    window = {i for s in subscribers for i in s.seen - acked}
    numbers = {i: s.numbers.get(i) for s in subscribers for i in s.seen - acked}
    assert all(epoch_of(i) == epoch for i in window), "only on the lost stream"
    assert all(numbers[i] in publisher.unanswered for i in window), numbers
    assert len(window) <= 32, "no more than the POSTs in flight when Redis died"
    # Events of the lost stream are delivered at most once; every new one exactly once.
    assert not delivery_problems(subscribers, acked | window, expected=lambda s: new)
    assert [len(s.resyncs) for s in subscribers] == [1] * len(subscribers), "one resync each"
    assert_refusals_are_503_with_retry_after(publisher)
    assert not health.failures, health.failures


async def test_a_resume_during_the_outage_gets_1013_on_websocket_and_a_retry_hint_on_sse(
    redis_server: RedisServer, instance: MakeInstance
) -> None:
    """What docs/redis.md tells a client resuming while Redis is away."""
    server = instance("one", redis_server.url)
    await server.start()
    await ready(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=10 * FACTOR) as http:
        body = {"type": "blog_update", "data": {"post_id": "p1", "action": "created"}}
        (since,) = (await http.post("/events", json=body)).json()["ids"]
        redis_server.kill()
        async with websockets.connect(
            f"{server.ws_url}/ws?since={since}", open_timeout=10 * FACTOR
        ) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 1013
        response = await http.get("/sse", headers={"Last-Event-ID": since})
    assert response.status_code == 200
    assert response.text.startswith("retry: "), response.text
    assert "data:" not in response.text  # then the stream ends: EventSource retries
