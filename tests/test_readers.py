"""Live readers on one instance: counts over WebSocket and SSE, GET /readers, `readers=1`
messages and their pacing, refusals, and the fan-out indexed by post_id."""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import Any

import anyio
import jwt
import orjson
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import (
    Service,
    Start,
    blog,
    close_code,
    comment,
    eventually,
    notice,
    receive,
    receive_n,
    within,
)
from tests.test_sse import sse

pytestmark = pytest.mark.anyio

SECRET = "jwt-secret-for-tests-0123456789abcdef"


async def counts(svc: Service, path: str = "/readers", **params: str) -> Any:
    response = await svc.http.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


async def readers_of(svc: Service, post_id: str) -> int:
    body = await counts(svc, post_id=post_id)
    assert body["post_id"] == post_id
    count: int = body["readers"]
    return count


async def until_readers(svc: Service, post_id: str, expected: int, seconds: float = 5) -> None:
    async def reached() -> bool:
        return await readers_of(svc, post_id) == expected

    await eventually(reached, seconds)


async def next_count(ws: ClientConnection, seconds: float = 5) -> dict[str, Any]:
    """The next `readers` message (events and heartbeats aside)."""
    with within(seconds):
        while True:
            message: dict[str, Any] = orjson.loads(await ws.recv())
            if message["type"] == "readers":
                return message


async def test_websocket_and_sse_subscribers_with_post_id_are_readers_while_connected(
    service: Service,
) -> None:
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(service.subscribe(post_id="p1"))
        await stack.enter_async_context(service.subscribe(post_id="p1", types="blog_update"))
        stream = await stack.enter_async_context(sse(service, post_id="p1"))
        await stack.enter_async_context(service.subscribe(post_id="p2"))
        await stack.enter_async_context(service.subscribe())  # no post: counted in total only
        await until_readers(service, "p1", 3)
        assert await readers_of(service, "p2") == 1
        assert await readers_of(service, "nobody-reads-this") == 0
        assert await counts(service) == {
            "total": 5,
            "posts": [{"post_id": "p1", "readers": 3}, {"post_id": "p2", "readers": 1}],
        }
        assert "wsb_readers_posts 2.0" in await service.metrics()
        await first.close()
        await until_readers(service, "p1", 2)
        await stream.response.aclose()
        await until_readers(service, "p1", 1)
    await until_readers(service, "p1", 0)
    assert await counts(service) == {"total": 0, "posts": []}
    assert "wsb_readers_posts 0.0" in await service.metrics()


async def test_top_posts_are_ordered_by_readers_then_post_id(start: Start) -> None:
    wanted = {"b": 2, "a": 2, "c": 3, "d": 1, "e": 2}
    async with start(connect_rate=1000.0) as svc, AsyncExitStack() as stack:
        for post_id, n in wanted.items():
            for _ in range(n):
                await stack.enter_async_context(svc.subscribe(post_id=post_id))

        async def all_in() -> bool:
            return (await counts(svc))["total"] == sum(wanted.values())

        await eventually(all_in)
        expected = [("c", 3), ("a", 2), ("b", 2), ("e", 2), ("d", 1)]
        posts = [{"post_id": p, "readers": n} for p, n in expected]
        assert (await counts(svc))["posts"] == posts  # default top 10: all five
        assert (await counts(svc, top="3"))["posts"] == posts[:3]
        assert (await counts(svc, "/api/v1/readers", top="1"))["posts"] == posts[:1]
        for bad in ("0", "101", "x", "-1", ""):
            response = await svc.http.get("/readers", params={"top": bad})
            assert response.status_code == 400, bad
            assert response.json()["error"] == "invalid_body"


async def test_readers_takes_the_auth_and_origin_rules_of_sse_but_no_rate_limit(
    start: Start,
) -> None:
    good = jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    async with start(jwt_secret=SECRET, connect_rate=1.0) as svc:
        refused = await svc.http.get("/readers")
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        assert (await svc.http.get("/readers", params={"token": "not.a.jwt"})).status_code == 401
        # Each way a subscriber may carry its token; ten in a row, far past the rate limit.
        ways: list[dict[str, Any]] = [
            {"headers": {"Authorization": f"Bearer {good}"}},
            {"headers": {"Cookie": f"wsb_token={good}"}},
            {"params": {"token": good, "post_id": "p1"}},
        ]
        for attempt in range(10):
            response = await svc.http.get("/readers", **ways[attempt % 3])
            assert response.status_code == 200, response.text
        origin = {"Authorization": f"Bearer {good}", "Origin": "http://localhost:3000"}
        allowed = await svc.http.get("/readers", headers=origin)
        assert allowed.headers["access-control-allow-origin"] == "http://localhost:3000"
        assert allowed.headers["access-control-allow-credentials"] == "true"
        assert allowed.headers["vary"] == "Origin"
        evil = {"Authorization": f"Bearer {good}", "Origin": "https://evil.example"}
        forbidden = await svc.http.get("/readers", headers=evil)
        assert forbidden.status_code == 403
        assert "access-control-allow-origin" not in forbidden.headers


async def test_a_watcher_gets_its_count_when_counted_then_each_change(start: Start) -> None:
    async with start(connect_rate=1000.0) as svc:
        async with svc.subscribe(post_id="p1", readers="1") as watcher:
            first = await next_count(watcher)
            assert first.keys() == {"type", "data", "timestamp"}  # no id
            assert first["data"] == {"post_id": "p1", "readers": 1}
            async with svc.subscribe(post_id="p1"), svc.subscribe(post_id="p2"):
                assert (await next_count(watcher, 3))["data"] == {"post_id": "p1", "readers": 2}
                # Events still arrive, and the count does not hold them up.
                [event_id] = await svc.publish(blog("p1"))
                assert (await receive(watcher))["id"] == event_id
            assert (await next_count(watcher, 3))["data"]["readers"] == 1


async def test_fifty_joins_in_a_second_send_one_or_two_messages_with_the_final_count(
    start: Start,
) -> None:
    async with start(connect_rate=1000.0) as svc, svc.subscribe(post_id="p1", readers="1") as w:
        assert (await next_count(w))["data"]["readers"] == 1
        async with AsyncExitStack() as stack:
            started = time.monotonic()
            async with anyio.create_task_group() as tasks:
                for _ in range(50):
                    tasks.start_soon(stack.enter_async_context, svc.subscribe(post_id="p1"))
            took = time.monotonic() - started
            seen = [(await next_count(w, 5))["data"]["readers"]]
            while seen[-1] != 51:
                seen.append((await next_count(w, 5))["data"]["readers"])
            # The joins took under a second here; at most one message per second (and a
            # loaded machine may spread the joins over a little more).
            assert len(seen) <= max(2, 1 + int(took) + 1), (seen, took)
            assert seen == sorted(seen)


async def test_an_sse_watcher_gets_counts_as_data_records_without_id(service: Service) -> None:
    async with sse(service, post_id="p7", readers="true") as stream:
        record = await stream.event()
        assert "id" not in record
        assert record["json"]["type"] == "readers"
        assert record["json"]["data"] == {"post_id": "p7", "readers": 1}
        async with service.subscribe(post_id="p7"):
            assert (await stream.event(5))["json"]["data"]["readers"] == 2


@pytest.mark.parametrize(
    "params",
    [
        {"readers": "1"},  # counts are per post
        {"readers": "yes", "post_id": "p1"},
        {"readers": "2", "post_id": "p1"},
        {"rewind": "0"},
        {"rewind": "101"},
        {"rewind": "ten"},
        {"rewind": "-1"},
        {"rewind": "0", "since": "x:1-0"},  # checked even when ignored
    ],
    ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()),
)
async def test_bad_readers_and_rewind_get_4400_and_sse_400(
    service: Service, params: dict[str, str]
) -> None:
    async with service.subscribe(**params) as ws:
        assert await close_code(ws) == 4400
    async with sse(service, **params) as stream:
        assert stream.response.status_code == 400
        assert orjson.loads(await stream.response.aread())["error"] == "invalid_body"


async def test_readers_off_is_accepted_and_sends_no_counts(service: Service) -> None:
    async with service.subscribe(post_id="p1", readers="false") as ws:
        [event_id] = await service.publish(blog("p1"))
        assert (await receive(ws))["id"] == event_id  # the first message is the event


async def test_readers_is_a_reserved_type(service: Service) -> None:
    response = await service.http.post("/events", json={"type": "readers", "data": {}})
    assert response.status_code == 422


async def test_the_fan_out_by_post_keeps_every_filter_meaning(service: Service) -> None:
    async with (
        service.subscribe(post_id="p1") as p1,
        service.subscribe(post_id="p2") as p2,
        service.subscribe(post_id="p1", types="comment_update") as p1_comments,
        service.subscribe(types="blog_update") as blogs,
        service.subscribe(types="system_notification") as notices,
        service.subscribe(post_id="p2", types="blog_update,system_notification") as p2_mixed,
        service.subscribe() as everything,
    ):
        ids = await service.publish(
            [blog("p1"), comment("p2"), notice(), comment("p1"), blog("p3")]
        )
        b1, c2, n, c1, b3 = ids
        assert [m["id"] for m in await receive_n(everything, 5)] == ids
        assert [m["id"] for m in await receive_n(p1, 3)] == [b1, n, c1]
        assert [m["id"] for m in await receive_n(p2, 2)] == [c2, n]
        assert [m["id"] for m in await receive_n(p1_comments, 1)] == [c1]
        assert [m["id"] for m in await receive_n(blogs, 2)] == [b1, b3]
        assert [m["id"] for m in await receive_n(notices, 1)] == [n]
        assert [m["id"] for m in await receive_n(p2_mixed, 1)] == [n]
        # Nothing else came: the next message each gets is the next event for it.
        last_blog, last_comment, last_notice = await service.publish(
            [blog("p2"), comment("p1", "c9"), notice("bye")]
        )
        assert (await receive(p2))["id"] == last_blog
        assert (await receive(blogs))["id"] == last_blog
        assert (await receive(p2_mixed))["id"] == last_blog
        assert (await receive(p1))["id"] == last_comment
        assert (await receive(p1_comments))["id"] == last_comment
        assert (await receive(notices))["id"] == last_notice
        assert (await receive(p2_mixed))["id"] == last_notice


async def test_a_resuming_watcher_gets_its_count_after_the_replay(service: Service) -> None:
    ids = await service.publish([blog("p1", n=n) for n in range(5)])
    async with service.subscribe(since=ids[0], post_id="p1", readers="1") as ws:
        replayed = await receive_n(ws, 5)
    assert [m.get("id") for m in replayed[:4]] == ids[1:]
    assert replayed[4]["type"] == "readers" and replayed[4]["data"]["readers"] == 1
