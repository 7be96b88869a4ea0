"""The Redis broker: several instances on one Redis, resume across them, outages.

Each test starts its own redis-server on a free port (tests/redis_server.py), so it can
kill, freeze and restart it; real wsbroadcast servers and real clients throughout.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
import redis.asyncio
import websockets
from anyio.to_thread import run_sync
from websockets.asyncio.client import ClientConnection

from tests.conftest import (
    FACTOR,
    Service,
    blog,
    close_code,
    comment,
    eventually,
    free_port,
    notice,
    receive,
    receive_n,
    running,
    spawned,
    within,
)
from tests.redis_server import RedisServer
from wsbroadcast.brokers import NewEpoch
from wsbroadcast.brokers.redis import STREAM, RedisBroker
from wsbroadcast.events import Draft, Event, Position

pytestmark = pytest.mark.anyio


def epoch(event_id: str) -> str:
    return event_id.rpartition(":")[0]


async def until(check: Callable[[], Any], seconds: float = 10) -> None:
    """Wait, within a bound, for `await check()` to be true."""
    with within(seconds):
        while True:
            if await check():
                return
            await anyio.sleep(0.05)  # the interval between polls; the bound is within()'s


async def status(service: Service, path: str) -> int:
    return (await service.http.get(path)).status_code


async def ready(*services: Service) -> None:
    for service in services:
        await until(lambda s=service: _is_ready(s))


async def _is_ready(service: Service) -> bool:
    return await status(service, "/readyz") == 200


@asynccontextmanager
async def pair(url: str, **changes: Any) -> AsyncIterator[tuple[Service, Service]]:
    """Two instances on one Redis, both ready."""
    async with running(broker_url=url, **changes) as a, running(broker_url=url, **changes) as b:
        await ready(a, b)
        yield a, b


def unbuffered(service: Service, **params: str) -> Any:
    """A subscriber that reads everything as it comes (no client-side backpressure)."""
    return websockets.connect(
        service.ws_url(**params), max_queue=None, compression=None, open_timeout=10 * FACTOR
    )


async def collect_until(ws: ClientConnection, last_id: str, seconds: float = 20) -> list[Any]:
    """Every message (heartbeats aside) up to and including the event `last_id`."""
    got: list[dict[str, Any]] = []
    with within(seconds):
        while not got or got[-1].get("id") != last_id:
            got.append(await receive(ws, seconds))
    return got


# --- fan-out across instances -------------------------------------------------------


async def test_an_event_posted_to_one_instance_reaches_subscribers_of_both_with_the_same_ids(
    redis_server: RedisServer,
) -> None:
    async with pair(redis_server.url) as (a, b), a.subscribe() as on_a, b.subscribe() as on_b:
        ids = await a.publish(blog("p1"))
        ids += await b.publish([comment("p2"), notice()])
        seen_on_a = await receive_n(on_a, 3)
        seen_on_b = await receive_n(on_b, 3)
    assert [m["id"] for m in seen_on_a] == ids
    assert seen_on_b == seen_on_a  # the same frames: ids, types, data, timestamps
    assert [m["type"] for m in seen_on_a] == [
        "blog_update",
        "comment_update",
        "system_notification",
    ]
    assert len({epoch(i) for i in ids}) == 1
    # The position part is the stream entry id.
    async with redis.asyncio.Redis.from_url(redis_server.url) as r:
        entries = await r.xrange(STREAM)
    assert [f"{epoch(ids[0])}:{entry_id.decode()}" for entry_id, _ in entries] == ids


async def test_concurrent_publishers_on_both_instances_are_seen_by_every_subscriber_in_one_order(
    redis_server: RedisServer,
) -> None:
    publishers, each = 20, 50
    async with pair(redis_server.url) as (a, b):
        async with (
            unbuffered(a) as a1, unbuffered(a) as a2, unbuffered(b) as b1, unbuffered(b) as b2,
        ):  # fmt: skip
            accepted: dict[int, list[str]] = {}

            async def publish(number: int) -> None:
                accepted[number] = []
                for index in range(each):
                    target = (a, b)[(number + index) % 2]
                    event = blog(f"p{number}", n=index)
                    accepted[number] += await target.publish(event)

            with within(60):
                async with anyio.create_task_group() as tasks:
                    for number in range(publishers):
                        tasks.start_soon(publish, number)
            views = [await receive_n(ws, publishers * each, 30) for ws in (a1, a2, b1, b2)]
    orders = [[m["id"] for m in view] for view in views]
    assert orders[1] == orders[0] and orders[2] == orders[0] and orders[3] == orders[0]
    everything = [i for ids in accepted.values() for i in ids]
    assert sorted(orders[0]) == sorted(everything) and len(set(everything)) == publishers * each
    positions = [Position.parse(i) for i in orders[0]]
    assert all(p is not None for p in positions)
    assert [p.place for p in positions if p] == sorted(p.place for p in positions if p)
    # Each publisher's events in the order it posted them, whichever instance took them.
    for number, ids in accepted.items():
        mine = [m for m in views[0] if m["data"]["post_id"] == f"p{number}"]
        assert [m["id"] for m in mine] == ids
        assert [m["data"]["n"] for m in mine] == list(range(each))


# --- resume across instances --------------------------------------------------------


async def test_a_subscriber_resumes_on_b_with_an_id_first_seen_on_a(
    redis_server: RedisServer,
) -> None:
    async with pair(redis_server.url) as (a, b):
        async with a.subscribe() as on_a:
            ids = await a.publish([blog(f"p{i}") for i in range(5)])
            seen = await receive_n(on_a, 2)
        async with b.subscribe(since=seen[-1]["id"]) as on_b:
            replayed = await receive_n(on_b, 3)
            live = await a.publish(blog("after"))
            after = await receive(on_b)
        assert [m["id"] for m in replayed] == ids[2:]
        assert after["id"] == live[0]
        # /events/head on either instance names the same, newest id.
        assert await a.head() == await b.head() == live[0]


async def test_a_resume_after_the_stream_is_deleted_gets_resync_and_so_do_connected_subscribers(
    redis_server: RedisServer,
) -> None:
    async with pair(redis_server.url) as (a, b), a.subscribe() as connected:
        [old] = await a.publish(blog())
        assert (await receive(connected))["id"] == old
        async with redis.asyncio.Redis.from_url(redis_server.url) as r:
            assert await r.delete(STREAM) == 1
        # A finds the stream lost while it is quiet, and tells its subscriber.
        lost = await receive(connected, 10)
        assert lost["type"] == "resync" and "id" not in lost
        new_epoch = epoch(lost["data"]["head"])
        assert new_epoch != epoch(old)
        async with b.subscribe(since=old) as resumed:
            first = await receive(resumed)
            assert first["type"] == "resync"
            assert first["data"]["reason"] == "history_expired"
            assert epoch(first["data"]["head"]) == new_epoch
            [new] = await b.publish(blog("after"))
            assert (await receive(resumed))["id"] == new
        assert epoch(new) == new_epoch
        assert (await receive(connected))["id"] == new


# --- idempotency --------------------------------------------------------------------


async def test_an_idempotency_key_is_shared_by_all_instances(redis_server: RedisServer) -> None:
    async with pair(redis_server.url) as (a, b), a.subscribe() as watcher:
        key = {"Idempotency-Key": "order-1"}
        first = await a.http.post("/events", json=blog("p1"), headers=key)
        again = await b.http.post("/events", json=[blog("other"), notice()], headers=key)
        assert first.status_code == again.status_code == 202
        assert again.json() == first.json()

        # Two at once, one on each instance: one is appended, both answer its ids.
        answers: list[httpx.Response] = []

        async def post(service: Service, body: Any) -> None:
            headers = {"Idempotency-Key": "order-2"}
            answers.append(await service.http.post("/events", json=body, headers=headers))

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(post, a, [blog("x1"), blog("x2")])
            tasks.start_soon(post, b, [blog("y1"), blog("y2")])
        assert [r.status_code for r in answers] == [202, 202]
        assert answers[0].json() == answers[1].json()

        [end] = await b.publish(notice("end"))
        got = await collect_until(watcher, end)
        assert [m["id"] for m in got] == first.json()["ids"] + answers[0].json()["ids"] + [end]
        async with redis.asyncio.Redis.from_url(redis_server.url) as r:
            assert 590 <= await r.ttl("wsbroadcast:idempotency:order-1") <= 600


# --- outages ------------------------------------------------------------------------


async def publish_refused(service: Service, body: Any) -> httpx.Response:
    """A publish while Redis is down: 503 with Retry-After, within 2 s."""
    started = anyio.current_time()
    response = await service.http.post("/events", json=body)
    elapsed = anyio.current_time() - started
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "unavailable"
    assert int(response.headers["retry-after"]) >= 1
    assert elapsed < 2.0, f"503 took {elapsed:.2f} s"
    return response


async def test_while_redis_is_down_publishing_is_503_within_2_s_and_all_recovers_on_restart(
    redis_server: RedisServer,
) -> None:
    async with pair(redis_server.url, heartbeat_seconds=0.5) as (a, b), a.subscribe() as on_a:
        [before] = await a.publish(blog("before"))
        assert (await receive(on_a))["id"] == before
        await run_sync(redis_server.kill)

        await publish_refused(a, blog("refused-a"))
        await publish_refused(b, [blog("refused-b1"), blog("refused-b2")])
        await until(lambda: _unready(a, b), 2)
        assert await status(a, "/healthz") == await status(b, "/healthz") == 200
        assert await status(a, "/events/head") == 503
        # The subscriber stays connected and keeps its heartbeats.
        with within(3):
            assert orjson.loads(await on_a.recv())["type"] == "heartbeat"

        await run_sync(redis_server.start)  # the same port, empty: a new epoch
        # The first event after the restart, posted to B the moment B takes it, reaches
        # A's subscriber (A may still be reconnecting). Refused tries never appear.
        refused = 0
        with within(10):
            while True:
                response = await b.http.post("/events", json=blog("first"))
                if response.status_code == 202:
                    break
                assert response.status_code == 503
                refused += 1
                await anyio.sleep(0.02)  # the interval between tries; the bound is within()'s
        [first] = response.json()["ids"]
        resync = await receive(on_a, 10)
        assert resync["type"] == "resync"
        assert epoch(resync["data"]["head"]) == epoch(first) != epoch(before)
        assert (await receive(on_a, 10))["id"] == first
        [then] = await a.publish(blog("then"))
        assert (await receive(on_a))["id"] == then
        await ready(a, b)
        async with redis.asyncio.Redis.from_url(redis_server.url) as r:
            kept = [orjson.loads(f[b"event"])["data"]["post_id"] for _, f in await r.xrange(STREAM)]
        assert kept == ["first", "then"], f"{refused} refused tries"


async def _unready(*services: Service) -> bool:
    return all([await status(s, "/readyz") == 503 for s in services])


@pytest.mark.parametrize("aof", [False, True], ids=["no-persistence", "aof-fsync-always"])
async def test_redis_killed_among_batches_leaves_every_batch_wholly_there_or_wholly_absent(
    tmp_path: Path, aof: bool
) -> None:
    server = RedisServer(free_port(), tmp_path, aof=aof)
    await run_sync(server.start)
    size = 50
    outcomes: dict[str, list[str] | None] = {}  # batch tag -> ids, or None when refused
    try:
        # History far above what is published: a trimmed oldest batch is not a torn one.
        async with pair(server.url, history_size=100_000) as (a, b), unbuffered(a) as watcher:
            killed = anyio.Event()

            async def publish(number: int) -> None:
                for count in range(1000):
                    tag = f"b{number}-{count}"
                    body = [blog(tag, n=i) for i in range(size)]
                    response = await (a, b)[count % 2].http.post("/events", json=body)
                    assert response.status_code in (202, 503), response.text
                    outcomes[tag] = response.json()["ids"] if response.status_code == 202 else None
                    if response.status_code == 503 and killed.is_set():
                        return

            async def kill() -> None:
                await until(lambda: _accepted(outcomes, 8))
                await run_sync(server.kill)
                killed.set()

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(kill)
                for number in range(4):
                    tasks.start_soon(publish, number)

            await run_sync(server.start)
            await ready(a, b)
            [end] = await b.publish(notice("end"))
            got = await collect_until(watcher, end, 30)
            async with redis.asyncio.Redis.from_url(server.url) as r:
                stored = await r.xrange(STREAM)
    finally:
        server.stop()

    seen = Counter(m["data"]["post_id"] for m in got if m.get("id") and m["type"] == "blog_update")
    kept = Counter(orjson.loads(f[b"event"])["data"].get("post_id") for _, f in stored)
    accepted = {tag for tag, ids in outcomes.items() if ids is not None}
    refused = {tag for tag, ids in outcomes.items() if ids is None}
    assert refused and len(accepted) >= 8
    # Whole batches only, each at most once, to subscribers and in Redis.
    assert set(seen.values()) <= {size}, seen
    assert set(kept.values()) <= {size, 1}, kept  # 1: the `end` notice
    delivered = [m["id"] for m in got if m.get("id")]
    assert len(delivered) == len(set(delivered))
    if aof:
        # fsync always: a 202 means on disk, so every accepted batch outlived the kill,
        # and the instances read on from their last ids, with no gap and no duplicate.
        assert accepted <= set(kept) and accepted <= set(seen)
        assert not any(m["type"] == "resync" for m in got)
    else:
        # No persistence: Redis came back empty (a new epoch); a refused batch never appears.
        assert not refused & set(seen)
        assert any(m["type"] == "resync" for m in got)
    for message in got:
        ids = outcomes.get(message.get("data", {}).get("post_id", ""))
        if message.get("id") and ids is not None:
            assert message["id"] in ids  # the ids its 202 named


async def _accepted(outcomes: dict[str, list[str] | None], count: int) -> bool:
    return sum(ids is not None for ids in outcomes.values()) >= count


async def test_a_publish_that_times_out_on_a_frozen_redis_never_appears_after_it_thaws(
    redis_server: RedisServer,
) -> None:
    async with pair(redis_server.url) as (a, _), a.subscribe() as on_a:
        [before] = await a.publish(blog("before"))
        assert (await receive(on_a))["id"] == before
        redis_server.freeze()
        try:
            await publish_refused(a, blog("refused"))
        finally:
            redis_server.thaw()
        # Redis now runs the publish it had queued; past its deadline, it appends nothing.
        await ready(a)
        [after] = await a.publish(blog("after"))
        assert (await receive(on_a, 10))["id"] == after
        async with redis.asyncio.Redis.from_url(redis_server.url) as r:
            kept = [orjson.loads(f[b"event"])["data"]["post_id"] for _, f in await r.xrange(STREAM)]
        assert kept == ["before", "after"]


async def test_the_service_starts_without_redis_and_becomes_ready_when_it_appears(
    tmp_path: Path,
) -> None:
    server = RedisServer(free_port(), tmp_path)
    try:
        async with running(broker_url=server.url) as service:
            assert await status(service, "/healthz") == 200
            assert await status(service, "/readyz") == 503
            await publish_refused(service, blog("early"))
            await run_sync(server.start)
            await ready(service)
            async with service.subscribe() as ws:
                ids = await service.publish(blog("p1"))
                assert (await receive(ws))["id"] == ids[0]
    finally:
        server.stop()


async def test_subscribers_of_a_killed_instance_resume_on_the_other_and_lose_nothing(
    redis_server: RedisServer,
) -> None:
    port = free_port()
    flags = ("--port", str(port), "--broker-url", redis_server.url)
    with spawned(*flags) as killed:
        await run_sync(killed.wait_ready)
        async with running(broker_url=redis_server.url) as b:
            await ready(b)
            url = f"ws://127.0.0.1:{port}/ws"
            async with websockets.connect(url, open_timeout=10 * FACTOR) as on_killed:
                await until(lambda: _ready_at(b, port))
                ids = await b.publish([blog("p1"), blog("p2")])
                seen = await receive_n(on_killed, 2)
                killed.popen.kill()  # SIGKILL: no close frame, no drain
                missed = await b.publish([blog("p3"), notice("while away"), blog("p4")])
                with within(5), pytest.raises(websockets.ConnectionClosed):
                    await on_killed.recv()
            async with b.subscribe(since=seen[-1]["id"]) as resumed:
                replayed = await receive_n(resumed, 3)
    assert [m["id"] for m in seen] == ids
    assert [m["id"] for m in replayed] == missed


async def _ready_at(service: Service, port: int) -> bool:
    return (await service.http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200


# --- the broker itself: ids, history and the tail ------------------------------------


def draft(post_id: str) -> Draft:
    return Draft("blog_update", {"post_id": post_id, "action": "created"}, "2024-01-01T00:00:00Z")


@asynccontextmanager
async def broker_with_tail(
    url: str, history_size: int
) -> AsyncIterator[tuple[RedisBroker, list[list[Event] | NewEpoch]]]:
    """A broker whose tail is read into a list, as the hub would."""
    broker = RedisBroker(url, history_size)
    items: list[list[Event] | NewEpoch] = []

    async def read() -> None:
        async for item in broker.tail():
            items.append(item)

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read)
            yield broker, items
            tasks.cancel_scope.cancel()
    finally:
        await broker.aclose()


async def test_history_is_resumable_from_any_kept_id_or_the_floor_and_nothing_older(
    redis_server: RedisServer,
) -> None:
    async with broker_with_tail(redis_server.url, history_size=5) as (broker, _):
        head = await broker.head()
        assert head.endswith(":0-0")  # a new stream
        first = await broker.append([draft("p0")])
        fresh = Position.parse(head)
        assert fresh is not None
        assert [e.id for e in await broker.read_after(fresh, 10) or []] == first.ids
        ids = list(first.ids)
        for number in range(1, 120):
            ids += (await broker.append([draft(f"p{number}")])).ids
        async with redis.asyncio.Redis.from_url(redis_server.url) as r:
            kept = await r.xrange(STREAM)
        assert 5 <= len(kept) < len(ids)  # trimmed near the history size
        oldest = ids.index(f"{epoch(head)}:{kept[0][0].decode()}")
        positions = [Position.parse(i) for i in ids]

        async def after(index: int) -> list[str] | None:
            position = positions[index]
            assert position is not None
            events = await broker.read_after(position, 1000)
            return None if events is None else [e.id or "" for e in events]

        assert await after(oldest) == ids[oldest + 1 :]
        assert await after(oldest - 1) == ids[oldest:]  # the floor: misses nothing
        assert await after(oldest - 2) is None  # trimmed: something after it is gone
        assert await after(0) is None
        assert await after(len(ids) - 1) == []
        assert fresh is not None and await broker.read_after(fresh, 10) is None
        last = positions[-1]
        assert last is not None
        assert await broker.read_after(last._replace(epoch="0ther"), 10) is None
        assert await broker.read_after(last._replace(ms=last.ms + 1), 10) is None  # unknown
        assert await broker.read_after(last._replace(seq=last.seq + 1), 10) is None
        assert await broker.head() == ids[-1]


async def test_a_tail_that_falls_behind_the_trimmed_history_announces_a_resync(
    redis_server: RedisServer,
) -> None:
    broker = RedisBroker(redis_server.url, history_size=5)
    tail = broker.tail()
    try:
        seen = await _first_then(broker, tail)
        assert isinstance(seen, list) and seen[0].data == draft("seen").data
        ids: list[str] = []
        for number in range(100):  # appended while this instance is not reading
            ids += (await broker.append([draft(f"p{number}")])).ids
        with within(5):
            announced = await anext(tail)
            batch = await anext(tail)
        assert isinstance(announced, NewEpoch)
        assert isinstance(batch, list) and batch[-1].id in ids and batch[0].id != ids[0]
        # The announced head is a valid `since` for what follows it.
        head = Position.parse(announced.head)
        assert head is not None
        assert [e.id for e in await broker.read_after(head, 1) or []] == [batch[0].id]
    finally:
        await broker.aclose()


async def _first_then(broker: RedisBroker, tail: Any) -> list[Event] | NewEpoch:
    """Start the tail, append one event and read it: the tail is then at that event."""
    result: list[list[Event] | NewEpoch] = []

    async def read_one() -> None:
        result.append(await anext(tail))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(read_one)
        await broker.append([draft("seen")])
    return result[0]


async def test_the_tail_hands_on_whole_batches_even_when_a_read_stops_inside_one(
    redis_server: RedisServer,
) -> None:
    broker = RedisBroker(redis_server.url, history_size=2000)
    tail = broker.tail()
    try:
        await _first_then(broker, tail)
        # 1,200 entries while the tail is not reading: one read (1,000 entries) ends
        # inside the fourth batch, which must come whole or not at all.
        batches = [(await broker.append([draft(f"b{n}")] * 300)).ids for n in range(4)]
        handed: list[list[str]] = []
        with within(5):
            while sum(map(len, handed)) < 1200:
                item = await anext(tail)
                assert isinstance(item, list)
                handed.append([e.id for e in item])
    finally:
        await broker.aclose()
    # What one read took goes on together, cut only where a batch ends.
    assert [i for item in handed for i in item] == [i for batch in batches for i in batch]
    ends = {batch[-1] for batch in batches}
    assert all(item[-1] in ends for item in handed), [len(item) for item in handed]
    assert len(handed) == 2  # batches 1-3 in the first read; the fourth, cut by it, after


async def test_batches_appended_while_the_tail_was_busy_go_on_together(
    redis_server: RedisServer,
) -> None:
    """The hub writes each subscriber's share of what it is handed in one write: what
    several POSTs appended meanwhile comes as one list, as on the embedded broker."""
    broker = RedisBroker(redis_server.url, history_size=2000)
    tail = broker.tail()
    try:
        await _first_then(broker, tail)
        ids = [i for n in range(3) for i in (await broker.append([draft(f"p{n}")])).ids]
        with within(5):
            item = await anext(tail)
    finally:
        await broker.aclose()
    assert isinstance(item, list) and [e.id for e in item] == ids


async def test_a_resume_while_redis_is_down_is_closed_with_1013(redis_server: RedisServer) -> None:
    async with running(broker_url=redis_server.url) as service:
        await ready(service)
        [event_id] = await service.publish(blog())
        await run_sync(redis_server.kill)
        async with service.subscribe(since=event_id) as ws:
            assert await close_code(ws) == 1013  # reconnect with backoff and `since`


@pytest.mark.parametrize("broker", ["memory", "redis"])
async def test_every_accepted_post_is_timed_once_however_the_hub_takes_them(
    broker: str, redis_server: RedisServer
) -> None:
    """wsb_publish_seconds: one observation per accepted POST, also when the hub takes
    several POSTs' events at once (an XREAD, the embedded broker's waiting batches)."""
    url = redis_server.url if broker == "redis" else "memory://"
    posts = 200
    async with running(broker_url=url) as service, service.subscribe() as ws:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=service.url, limits=limits) as http:

            async def post(n: int) -> None:
                response = await http.post("/events", json=blog(f"p{n}"))
                assert response.status_code == 202, response.text

            async with anyio.create_task_group() as tasks:
                for n in range(posts):
                    tasks.start_soon(post, n)
        await receive_n(ws, posts)

        async def all_timed() -> bool:
            return f"wsb_publish_seconds_count {posts}.0" in await service.metrics()

        await eventually(all_timed, 5)
