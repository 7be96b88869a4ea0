"""`rewind=N` and `WSB_HISTORY_TTL`, on the embedded broker and on a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import (
    Start,
    blog,
    comment,
    free_port,
    notice,
    receive,
    receive_n,
    within,
)
from tests.redis_server import RedisServer
from tests.test_sse import sse
from wsbroadcast.settings import SettingsError, load_settings

pytestmark = pytest.mark.anyio

TTL = 1.0  # seconds: short, so a test waits little for its events to age


@pytest.fixture(params=["memory", "redis"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
        return
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def aged(event_id: str, ttl: float = TTL) -> None:
    """Wait until the event is older than the age limit: its age is its id's ms part."""
    accepted = int(event_id.rpartition(":")[2].partition("-")[0]) / 1000
    with within(ttl + 5):
        while time.time() <= accepted + ttl:  # noqa: ASYNC110 - waiting on the clock itself
            await anyio.sleep(accepted + ttl - time.time() + 0.01)


async def test_rewind_sends_the_last_events_that_pass_the_filters_then_live(
    start: Start, broker_url: str
) -> None:
    async with start(broker_url=broker_url) as svc:
        ids = await svc.publish(
            [blog("p1", n=0), comment("p1"), blog("p2"), notice(), blog("p1", n=4), blog("p3")]
        )
        async with svc.subscribe(rewind="2", post_id="p1", types="blog_update") as ws:
            got = await receive_n(ws, 2)
            assert [m["id"] for m in got] == [ids[0], ids[4]]
            [live] = await svc.publish(blog("p1", n=9))
            assert (await receive(ws))["id"] == live
        async with svc.subscribe(rewind="3", post_id="p1") as ws:  # notices pass post_id
            assert [m["id"] for m in await receive_n(ws, 3)] == [ids[3], ids[4], live]
        async with svc.subscribe(rewind="100") as ws:  # more than there is: all of it
            assert [m["id"] for m in await receive_n(ws, 7)] == [*ids, live]
        async with sse(svc, rewind="1", post_id="p2", types="blog_update") as stream:
            record = await stream.event()
            assert record["id"] == ids[2]


async def test_rewind_reads_back_across_many_events_for_a_rare_post(start: Start) -> None:
    async with start(history_size=1000) as svc:
        rare = []
        for batch in range(3):
            body = [blog("busy", n=i) for i in range(100)]
            body[50] = blog("rare", n=batch)
            ids = await svc.publish(body)
            rare.append(ids[50])
        async with svc.subscribe(rewind="3", post_id="rare", types="blog_update") as ws:
            assert [m["id"] for m in await receive_n(ws, 3)] == rare


async def test_rewind_on_an_empty_history_goes_straight_to_live(
    start: Start, broker_url: str
) -> None:
    async with start(broker_url=broker_url) as svc, svc.subscribe(rewind="5") as ws:
        [live] = await svc.publish(blog())
        assert (await receive(ws))["id"] == live


async def test_rewind_is_ignored_with_since(start: Start, broker_url: str) -> None:
    async with start(broker_url=broker_url) as svc:
        ids = await svc.publish([blog(f"p{i}") for i in range(4)])
        async with svc.subscribe(since=ids[2], rewind="3") as ws:
            assert (await receive(ws))["id"] == ids[3]
            [live] = await svc.publish(blog())
            assert (await receive(ws))["id"] == live


async def test_rewind_while_publishing_misses_nothing_and_repeats_nothing(
    start: Start, broker_url: str
) -> None:
    async with start(broker_url=broker_url) as svc:
        published: list[str] = []
        stop = anyio.Event()

        async def publish() -> None:
            while not stop.is_set():
                published.extend(await svc.publish([blog("p1"), comment("p2")]))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publish)
            with within(10):
                while len(published) < 20:  # noqa: ASYNC110 - the publisher's progress
                    await anyio.sleep(0.01)
            async with svc.subscribe(rewind="10", post_id="p1") as ws:
                got = [m["id"] for m in await receive_n(ws, 30, 20)]
            stop.set()
        mine = [i for n, i in enumerate(published) if n % 2 == 0]  # p1's: every other id, in order
        start_at = mine.index(got[0])
        assert got == mine[start_at : start_at + 30]  # no gap, no duplicate, in order


async def test_events_past_the_age_limit_are_never_replayed(start: Start, broker_url: str) -> None:
    async with start(broker_url=broker_url, history_ttl=TTL) as svc:
        before = await svc.head()
        old = await svc.publish([blog("p1", n=1), notice("maintenance at 22:00")])
        await aged(old[-1])
        # A quiet stream ages too: nothing is replayed, and a `since` whose successor
        # aged out gets resync.
        async with svc.subscribe(rewind="10") as ws:
            [live] = await svc.publish(blog("p1", n=2))
            assert (await receive(ws))["id"] == live
        async with svc.subscribe(since=before) as ws:
            first: dict[str, Any] = await receive(ws)
            assert first["type"] == "resync" and first["data"]["reason"] == "history_expired"
            assert "id" not in first
        async with svc.subscribe(since=old[0]) as ws:
            assert (await receive(ws))["type"] == "resync"
        # The last aged event's successor is still young: that resume replays it.
        async with svc.subscribe(since=old[-1]) as ws:
            assert (await receive(ws))["id"] == live
        async with svc.subscribe(rewind="10") as ws:
            assert (await receive(ws))["id"] == live  # the young one only
        async with sse(svc, headers={"Last-Event-ID": old[0]}) as stream:
            assert (await stream.event())["json"]["type"] == "resync"


@pytest.mark.parametrize(("raw", "seconds"), [("0", 0.0), ("3600", 3600.0), ("0.5", 0.5)])
def test_history_ttl_is_read_in_seconds(raw: str, seconds: float) -> None:
    settings = load_settings(environ={"WSB_HISTORY_TTL": raw}, env_file=None)
    assert settings.history_ttl == seconds


@pytest.mark.parametrize("raw", ["-1", "an hour", "inf"])
def test_a_bad_history_ttl_stops_the_start_naming_it(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"^WSB_HISTORY_TTL: "):
        load_settings(environ={"WSB_HISTORY_TTL": raw}, env_file=None)
