"""Scenario 7: the long run. 200 subscribers (WebSocket and SSE), 10 of them leaving and
coming back with `since` every second, 20 events/s, on Redis. The server's RSS, open file
descriptors and asyncio tasks stay flat (within 10% after the warm-up), its log shows no
error, and every subscriber gets every event.

`make soak` runs 20 minutes (WSB_SOAK_SECONDS); `make test` two minutes.
"""

from __future__ import annotations

import os
import random
import statistics
import time

import anyio
import httpx
import pytest

from tests.chaos.conftest import MakeInstance
from tests.chaos.harness import (
    FACTOR,
    Background,
    Health,
    Publisher,
    Subscriber,
    all_connected,
    delivered,
    delivery_problems,
    log_errors,
    metric,
    ready,
    report,
    spread,
)
from tests.redis_server import RedisServer

SECONDS = float(os.environ.get("WSB_SOAK_SECONDS", "120"))
WARM_UP = max(8.0, SECONDS / 4)  # the heap and the pools settle first
SUBSCRIBERS = 200
CHURN = 10  # subscribers leaving, and coming back, each second
RATE = 20  # events/s
SAMPLE_EVERY = min(5.0, SECONDS / 60)  # 20 minutes: every 5 s
FLAT = 1.10  # "flat": the end within 10% of the start, after the warm-up

# The marker wins over --timeout: the whole run, plus starting and checking at a busy time.
pytestmark = [pytest.mark.anyio, pytest.mark.soak, pytest.mark.timeout(SECONDS * 1.5 + 300)]


async def churn(subscribers: list[Subscriber], stop: anyio.Event) -> None:
    """CHURN subscribers a second leave, as closed tabs do; each comes back with `since`."""
    async with anyio.create_task_group() as tasks:
        while not stop.is_set():
            for subscriber in random.sample(subscribers, CHURN):
                tasks.start_soon(subscriber.drop)
            with anyio.move_on_after(1):  # the churn's own clock
                await stop.wait()


async def test_a_long_run_with_churn_stays_flat_logs_no_error_and_delivers_every_event(
    redis_server: RedisServer, instance: MakeInstance
) -> None:
    server = instance("one", redis_server.url)
    await server.start()
    await ready(server)
    subscribers = spread(SUBSCRIBERS, [server], sse_every=3)
    publisher = Publisher([server], RATE)
    health = Health([server], every=1)
    samples: list[tuple[float, int, int, float]] = []  # (t, rss, fds, tasks)

    async with (
        anyio.create_task_group() as tasks,
        httpx.AsyncClient(timeout=10 * FACTOR) as http,
    ):
        clients, load = Background(tasks), Background(tasks)
        setup = time.monotonic()
        for subscriber in subscribers:
            clients.start(subscriber.run)
        await all_connected(subscribers)
        load.start(publisher.run)
        load.start(health.run)
        load.start(lambda stop: churn(subscribers, stop))
        began = time.monotonic()
        print(f"\n[chaos] soak: {len(subscribers)} connected in {began - setup:.1f} s")
        while (elapsed := time.monotonic() - began) < SECONDS:
            tasks_now = await metric(server, "wsb_asyncio_tasks", http)
            samples.append((elapsed, server.rss_bytes(), server.open_fds(), tasks_now))
            if SECONDS >= 300 and len(samples) % 12 == 0:  # a long run shows how it goes
                t, r, f, k = samples[-1]
                print(
                    f"[chaos] soak at {t:.0f} s: rss {r / 2**20:.1f} MB, {f} fds, {k:.0f} tasks, "
                    f"{len(publisher.acked)} acked, publisher behind {publisher.behind:.1f} s",
                    flush=True,
                )
            await anyio.sleep(SAMPLE_EVERY)  # the sampling interval
        await load.finish()
        acked = publisher.acked_ids
        ended = time.monotonic()
        await delivered(subscribers, lambda s: acked)
        await clients.finish()
        print(f"[chaos] soak: delivered and closed in {time.monotonic() - ended:.1f} s")

    settled = [s for s in samples if s[0] >= WARM_UP]
    assert len(settled) >= 6, "enough samples after the warm-up"

    def start_end(column: int) -> tuple[float, float]:
        """Medians of the first and last fifths after the warm-up: a connection that is
        closing at the moment of one sample is not a trend."""
        values = [s[column] for s in settled]
        window = max(3, len(values) // 5)
        return statistics.median(values[:window]), statistics.median(values[-window:])

    rss, fds, task_count = start_end(1), start_end(2), start_end(3)
    reconnects = sum(s.connects - 1 for s in subscribers)
    report(
        "soak",
        seconds=SECONDS,
        subscribers=len(subscribers),
        reconnects=reconnects,
        acked=len(acked),
        rss_mb=(rss[0] / 2**20, rss[1] / 2**20),
        fds=fds,
        tasks=task_count,
        cpu_s=server.cpu_seconds(),
    )
    print(
        "[chaos] soak samples (s, rss MB, fds, tasks):",
        *(
            f"{t:.0f}:{r / 2**20:.1f}/{f}/{k:.0f}"
            for t, r, f, k in samples[:: max(1, len(samples) // 30)]
        ),
    )
    assert not delivery_problems(subscribers, acked)
    assert reconnects >= CHURN * (SECONDS - 5) / 2, "subscribers came and went all along"
    assert rss[1] <= FLAT * rss[0], f"RSS grew from {rss[0]} to {rss[1]} bytes"
    assert fds[1] <= FLAT * fds[0], f"open fds went from {fds[0]} to {fds[1]}"
    assert task_count[1] <= FLAT * task_count[0], f"tasks went from {task_count}"
    assert not log_errors(server.log()), log_errors(server.log())[:5]
    assert not health.failures, health.failures
    assert not publisher.refusals and not publisher.given_up
