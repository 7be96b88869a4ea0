"""GET /sse: the same stream as Server-Sent Events, with resume, filters, CORS and limits."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import orjson
import pytest

from tests.conftest import (
    FACTOR,
    Service,
    Start,
    blog,
    comment,
    eventually,
    free_port,
    notice,
    spawned,
    within,
)

pytestmark = pytest.mark.anyio


class Stream:
    """A streaming SSE reader: records, each a dict of its fields, comments under ':'."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def record(self, seconds: float = 5) -> dict[str, str]:
        fields: dict[str, str] = {}
        with within(seconds):
            async for line in self._lines:
                if not line:
                    if fields:
                        return fields
                    continue
                name, _, value = line.partition(":")
                fields[name or ":"] = value.removeprefix(" ")
        raise EOFError("the stream ended")

    async def event(self, seconds: float = 5) -> dict[str, Any]:
        """The next record with data that is not a heartbeat, its JSON under 'json'."""
        while True:
            record = await self.record(seconds)
            if "data" in record:
                return {**record, "json": orjson.loads(record["data"])}


@asynccontextmanager
async def sse(
    svc: Service, path: str = "/sse", headers: dict[str, str] | None = None, **params: str
) -> AsyncIterator[Stream]:
    async with svc.http.stream("GET", path, params=params, headers=headers) as response:
        yield Stream(response)


async def test_events_arrive_in_order_with_ids_and_the_same_json(service: Service) -> None:
    async with sse(service) as stream:
        response = stream.response
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache, no-transform"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in response.headers
        assert (await stream.record())["retry"].isdigit()
        ids = await service.publish([blog(), comment(), notice()])
        records = [await stream.event() for _ in ids]
    assert [r["id"] for r in records] == ids
    assert all("event" not in r for r in records)  # onmessage gets every one
    assert [r["json"]["id"] for r in records] == ids
    assert set(records[0]["json"]) == {"id", "type", "data", "timestamp"}


# WebSocket frames carry their length in 7, 16 or 64 bits; the JSON must not depend on it.
@pytest.mark.parametrize("size", [10, 200, 70_000], ids=["7-bit", "16-bit", "64-bit"])
async def test_websocket_and_sse_subscribers_get_the_same_json(start: Start, size: int) -> None:
    async with (
        start(max_body_bytes=1 << 20) as svc,
        svc.subscribe() as ws,
        sse(svc) as stream,
    ):
        await stream.record()  # the retry hint: the stream is subscribed
        [event_id] = await svc.publish(notice("m" * size))
        with within(5):
            text = await ws.recv()
        record = await stream.event()
    assert isinstance(text, str)
    assert record["data"] == text
    assert orjson.loads(text)["id"] == event_id
    assert orjson.loads(text)["data"]["message"] == "m" * size


async def test_both_prefixes_serve_sse(service: Service) -> None:
    async with sse(service, "/api/v1/sse") as stream:
        [event_id] = await service.publish(blog())
        assert (await stream.event())["id"] == event_id


async def test_last_event_id_resumes_and_wins_over_since(service: Service) -> None:
    ids = await service.publish([blog(f"p{i}") for i in range(5)])
    async with sse(service, headers={"Last-Event-ID": ids[2]}, since=ids[0]) as stream:
        assert [(await stream.event())["id"] for _ in range(2)] == ids[3:]
    async with sse(service, since=ids[3]) as stream:
        assert (await stream.event())["id"] == ids[4]


async def test_an_unknown_id_gets_a_resync_event_without_id(service: Service) -> None:
    await service.publish(blog())
    async with sse(service, headers={"Last-Event-ID": "gone:1-0"}) as stream:
        record = await stream.event()
    assert "id" not in record
    assert record["json"]["type"] == "resync"
    assert record["json"]["data"]["head"] == await service.head()


async def test_filters_apply(service: Service) -> None:
    async with sse(service, types="blog_update", post_id="p2") as stream:
        await service.publish([blog("p1"), comment("p2"), blog("p2"), notice()])
        assert (await stream.event())["json"]["data"] == {"post_id": "p2", "action": "created"}


async def test_heartbeats_are_comment_lines(start: Start) -> None:
    async with start(heartbeat_seconds=0.2) as svc, sse(svc) as stream:
        await stream.record()  # retry
        assert (await stream.record())[":"].startswith("heartbeat")


@pytest.mark.parametrize(
    ("origin", "status"),
    [("http://localhost:3000", 200), ("https://evil.example", 403)],
    ids=["allowed", "refused"],
)
async def test_cors_echoes_only_allowed_origins(service: Service, origin: str, status: int) -> None:
    async with sse(service, headers={"Origin": origin}) as stream:
        headers = stream.response.headers
        assert stream.response.status_code == status
        assert headers["vary"] == "Origin"
        if status == 200:
            assert headers["access-control-allow-origin"] == origin
            assert headers["access-control-allow-credentials"] == "true"
        else:
            assert "access-control-allow-origin" not in headers


async def test_a_preflight_allows_the_authorization_header(service: Service) -> None:
    response = await service.http.options(
        "/sse",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status_code == 204
    assert "Authorization" in response.headers["access-control-allow-headers"]


async def test_refusals_are_plain_http(start: Start) -> None:
    import jwt

    async with start(jwt_secret="s" * 32, connect_rate=1.0) as svc:  # a burst of 2
        assert [(await svc.http.get("/sse")).status_code for _ in range(3)] == [401, 401, 429]
    async with start(jwt_secret="s" * 32) as svc:
        good = jwt.encode({"exp": int(time.time()) + 60}, "s" * 32, algorithm="HS256")
        async with sse(svc, headers={"Authorization": f"Bearer {good}"}) as stream:
            assert stream.response.status_code == 200
        async with sse(svc, headers={"Cookie": f"wsb_token={good}"}) as stream:
            assert stream.response.status_code == 200


async def test_sse_subscribers_count_by_transport(service: Service) -> None:
    async with sse(service) as stream:
        await stream.record()
        assert 'wsb_connections{transport="sse"} 1.0' in await service.metrics()


async def test_a_reader_that_stops_reading_is_ended_with_memory_bounded(start: Start) -> None:
    async with start(client_buffer=16, max_body_bytes=1 << 20) as svc:
        sock = await anyio.connect_tcp("127.0.0.1", svc.port)
        await sock.send(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read again
        for _ in range(6):
            await svc.publish([notice("x" * 16_000)] * 50)

        async def ended() -> bool:
            return 'wsb_connections{transport="sse"} 0.0' in await svc.metrics()

        await eventually(ended, seconds=15)
        assert 'wsb_disconnects_total{code="1013"} 1.0' in await svc.metrics()
        await sock.aclose()


async def test_sigterm_ends_open_streams_and_exits_0_fast() -> None:
    port = free_port()
    with spawned("--port", str(port)) as process:
        process.wait_ready()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            async with http.stream("GET", "/sse") as a, http.stream("GET", "/api/v1/sse") as b:
                started = time.monotonic()
                status = await anyio.to_thread.run_sync(process.terminate)
                elapsed = time.monotonic() - started
                for response in (a, b):
                    with within(5):
                        async for _ in response.aiter_lines():
                            pass  # ends: the server finished the stream
    assert status == 0
    assert elapsed < 5 * FACTOR
