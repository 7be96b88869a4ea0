"""Scenario 8: through a real proxy. Debian's nginx running docs/deploy.md's configuration in
front of two instances: a rolling restart under load answers no 502.

nginx's default `max_fails=1 fail_timeout=10s` marked a restarted instance failed and then
let a single probe (a WebSocket that stayed open) decide when it came back: 502 for every
request for 7-14 s while the other instance was up. The documented upstream sets
`max_fails=0`; this test keeps it so.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.chaos.conftest import MakeInstance
from tests.chaos.harness import (
    Background,
    Health,
    Publisher,
    Subscriber,
    acked_at_least,
    all_connected,
    delivered,
    delivery_problems,
    ready,
    report,
    scaled,
)
from tests.chaos.nginx import Nginx
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

SUBSCRIBERS = scaled(40, 200)
RATE = scaled(20, 50)  # events/s
BETWEEN = scaled(2, 12)  # seconds of load before, between and after the restarts: past
# nginx's 10 s fail_timeout in the full run, when a failed server gets its probe


async def test_a_rolling_restart_behind_the_documented_nginx_answers_no_502(
    redis_server: RedisServer, instance: MakeInstance, tmp_path: Path
) -> None:
    a, b = instance("a", redis_server.url), instance("b", redis_server.url)
    await a.start()
    await b.start()
    await ready(a)
    await ready(b)
    proxy = Nginx(tmp_path, [a, b])
    try:
        await proxy.start()
        subscribers = [
            Subscriber(
                n,
                [proxy],
                transport="sse" if n % 4 == 0 else "ws",
                address=f"127.0.0.{2 + n // 10}",
            )  # type: ignore[list-item]
            for n in range(SUBSCRIBERS)
        ]
        publisher = Publisher([a, b], RATE, base_url=proxy.url)
        health = Health([proxy])  # type: ignore[list-item]
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
                assert await going.terminate() == 0
                await going.start()
                await ready(going)
                target += RATE * BETWEEN
                await acked_at_least(publisher, target)
            await load.finish()
            acked = publisher.acked_ids
            await delivered(subscribers, lambda s: acked)
            await clients.finish()
    finally:
        proxy.stop()

    statuses = proxy.statuses()
    failures = [f for s in subscribers for f in s.failures]
    report(
        "rolling restart behind nginx",
        subscribers=len(subscribers),
        acked=len(acked),
        requests=len(statuses),
        answered_502=statuses.count(502),
        answered_5xx=sum(1 for s in statuses if s >= 500),
        client_failures=len(failures),
    )
    assert statuses.count(502) == 0, f"{statuses.count(502)} answers were 502"
    assert 502 not in publisher.statuses
    assert not [f for f in failures if "502" in f], failures[:3]
    assert not delivery_problems(subscribers, acked)
    assert not publisher.given_up
    assert not health.failures, health.failures
