"""Resume with `since`: exact replay, no gap or duplicate at the seam, resync otherwise."""

from __future__ import annotations

import anyio
import pytest

from tests.conftest import Service, Start, blog, notice, receive, receive_n, within

pytestmark = pytest.mark.anyio


async def test_since_replays_exactly_the_events_after_it_then_live(service: Service) -> None:
    ids = await service.publish([blog(f"p{i}") for i in range(5)])
    async with service.subscribe(since=ids[1]) as ws:
        replayed = await receive_n(ws, 3)
        [live] = await service.publish(notice())
        assert [m["id"] for m in replayed] == ids[2:]
        assert (await receive(ws))["id"] == live
    assert 'wsb_resumes_total{outcome="replayed"} 1.0' in await service.metrics()


async def test_since_the_head_replays_nothing(service: Service) -> None:
    await service.publish(blog())
    async with service.subscribe(since=await service.head()) as ws:
        [live] = await service.publish(notice())
        assert (await receive(ws))["id"] == live


async def test_the_head_of_an_empty_stream_is_a_valid_since(service: Service) -> None:
    head = await service.head()
    ids = await service.publish([blog(), notice()])
    async with service.subscribe(since=head) as ws:
        assert [m["id"] for m in await receive_n(ws, 2)] == ids


async def test_resume_while_publishing_has_no_gap_and_no_duplicate(service: Service) -> None:
    published: list[str] = []
    halfway, done = anyio.Event(), anyio.Event()

    async def publisher() -> None:
        for i in range(150):
            published.extend(await service.publish([notice(f"m{i}"), blog(f"p{i}")]))
            if i == 50:
                halfway.set()
        done.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(publisher)
        with within(10):
            await halfway.wait()
        since = published[40]
        async with service.subscribe(since=since) as ws:
            with within(20):
                await done.wait()
            expected = published[published.index(since) + 1 :]
            got = [m["id"] for m in await receive_n(ws, len(expected))]
            [last] = await service.publish(notice("after"))
            assert (await receive(ws))["id"] == last  # nothing more in between
    assert got == expected


async def test_a_live_resume_at_the_seam_sees_each_event_once(service: Service) -> None:
    published: list[str] = []
    done = anyio.Event()

    async def publisher() -> None:
        for i in range(100):
            published.extend(await service.publish(blog(f"p{i}")))
        done.set()

    first = await service.publish(notice("before"))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(publisher)
        async with service.subscribe(since=first[0]) as ws:
            with within(10):
                await done.wait()
            received = [m["id"] for m in await receive_n(ws, len(published))]
            [last] = await service.publish(notice("after"))
            assert (await receive(ws))["id"] == last
    assert received == published


@pytest.mark.parametrize(
    "since", ["garbage", "deadbeef:1-0", "abc:def"], ids=["not-an-id", "other-epoch", "malformed"]
)
async def test_an_unknown_or_foreign_id_gets_resync_with_the_head_then_live(
    service: Service, since: str
) -> None:
    await service.publish(blog())
    head = await service.head()
    async with service.subscribe(since=since) as ws:
        resync = await receive(ws)
        [live] = await service.publish(notice())
        assert (await receive(ws))["id"] == live
    assert set(resync) == {"type", "data", "timestamp"}
    assert resync["type"] == "resync"
    assert resync["data"] == {"reason": "history_expired", "head": head}
    assert 'wsb_resumes_total{outcome="resync"} 1.0' in await service.metrics()


async def test_an_id_older_than_history_gets_resync(start: Start) -> None:
    async with start(history_size=5) as svc:
        ids = await svc.publish([blog(f"p{i}") for i in range(10)])
        async with svc.subscribe(since=ids[3]) as ws:
            message = await receive(ws)
        assert message["type"] == "resync"
        assert message["data"]["head"] == ids[-1]
        # The newest id evicted still names a place nothing after which is lost.
        async with svc.subscribe(since=ids[4]) as ws:
            assert [m["id"] for m in await receive_n(ws, 5)] == ids[5:]


async def test_an_id_from_a_restarted_server_gets_resync(start: Start) -> None:
    async with start() as first:
        [old] = await first.publish(blog())
    async with start() as second:
        await second.publish([blog(), blog()])
        async with second.subscribe(since=old) as ws:
            message = await receive(ws)
        assert message["type"] == "resync"
        assert message["data"]["head"] == await second.head()


async def test_a_replay_larger_than_the_client_buffer_is_paced_not_closed(start: Start) -> None:
    async with start(client_buffer=4, history_size=2000) as svc:
        ids = []
        for _ in range(3):
            ids += await svc.publish([notice(f"m{i}") for i in range(500)])
        async with svc.subscribe(since=ids[0]) as ws:
            received = [m["id"] for m in await receive_n(ws, len(ids) - 1, seconds=20)]
            [live] = await svc.publish(blog())
            assert (await receive(ws))["id"] == live
        assert received == ids[1:]


async def test_filters_apply_to_the_replay(service: Service) -> None:
    ids = await service.publish([notice("start"), blog("p1"), notice("n"), blog("p2")])
    async with service.subscribe(since=ids[0], types="blog_update") as ws:
        assert [m["id"] for m in await receive_n(ws, 2)] == [ids[1], ids[3]]
