"""`wsbroadcast.client` against real servers: retries that never publish twice, Retry-After
honoured, a service that comes up late, and a 4xx that raises at once."""

from __future__ import annotations

import dataclasses
import email.utils
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import FACTOR, Service, blog, listening_socket, receive, within
from wsbroadcast.app import create_app
from wsbroadcast.cli import build_server
from wsbroadcast.client import AsyncPublisher, Publisher, PublishError, _retry_after
from wsbroadcast.settings import Settings

pytestmark = pytest.mark.anyio


@dataclasses.dataclass
class Flaky:
    """A stub in front of the real service: it passes every POST on, but answers the first
    `fail` of them with 503 and Retry-After, as if the response had been lost on the way."""

    target: str
    fail: int = 1
    keys: list[str | None] = dataclasses.field(default_factory=list)

    async def events(self, request: Request) -> Response:
        self.keys.append(request.headers.get("idempotency-key"))
        async with httpx.AsyncClient(base_url=self.target) as http:
            upstream = await http.post(
                "/events",
                content=await request.body(),
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            )
        if len(self.keys) <= self.fail:
            body = b'{"error": "unavailable", "detail": "try again"}'
            return Response(body, 503, {"Retry-After": "1"}, media_type="application/json")
        return Response(upstream.content, upstream.status_code, media_type="application/json")


@asynccontextmanager
async def stub(flaky: Flaky) -> AsyncIterator[str]:
    """The stub served by a real uvicorn on a free port; yields its base URL."""
    app = Starlette(routes=[Route("/events", flaky.events, methods=["POST"])])
    async with serving(app, listening_socket()) as url:
        yield url


@asynccontextmanager
async def serving(app: Any, sock: Any, settings: Settings | None = None) -> AsyncIterator[str]:
    port = sock.getsockname()[1]
    settings = dataclasses.replace(settings or Settings(), port=port)
    server = build_server(settings, app, log_config=None)
    done = anyio.Event()

    async def serve() -> None:
        try:
            await server.serve([sock])
        finally:
            done.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(serve)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            with anyio.CancelScope(shield=True), anyio.move_on_after(15 * FACTOR):
                await done.wait()
    sock.close()


async def published_count(service: Service) -> int:
    for line in (await service.metrics()).splitlines():
        if line.startswith("wsb_events_published_total"):
            return int(float(line.split()[-1]))
    raise AssertionError("no wsb_events_published_total")


async def test_a_503_with_retry_after_is_retried_with_the_same_key_and_publishes_once(
    service: Service,
) -> None:
    flaky = Flaky(service.url)
    async with stub(flaky) as url, service.subscribe() as ws:
        async with AsyncPublisher(url, retry_for=10 * FACTOR) as publisher:
            started = time.monotonic()
            ids = await publisher.publish(blog("p1"))
            waited = time.monotonic() - started
        # Two tries reached the service, both with one key: it published once.
        assert len(flaky.keys) == 2 and flaky.keys[0] == flaky.keys[1] is not None
        assert waited >= 0.9  # Retry-After: 1 honoured
        event = await receive(ws)
        assert [event["id"]] == ids and event["data"]["post_id"] == "p1"
        assert await published_count(service) == 1


async def test_the_sync_publisher_retries_the_same_way(service: Service) -> None:
    flaky = Flaky(service.url)
    async with stub(flaky) as url:

        def publish() -> list[str]:
            with Publisher(url, retry_for=10 * FACTOR) as publisher:
                return publisher.publish([blog("p1"), blog("p2")], idempotency_key="k-1")

        ids = await anyio.to_thread.run_sync(publish)
        assert flaky.keys == ["k-1", "k-1"] and len(ids) == 2
        assert await published_count(service) == 2


async def test_a_service_that_is_down_then_up_gets_the_event_once() -> None:
    sock = listening_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    result: dict[str, Any] = {}

    def publish() -> None:
        with Publisher(url, retry_for=20 * FACTOR) as publisher:
            result["ids"] = publisher.publish(blog("p1"))

    thread = threading.Thread(target=publish)
    thread.start()
    # Down: the first try is taken and dropped without an answer.
    sock.settimeout(10 * FACTOR)
    first, _ = sock.accept()
    first.close()
    # Up: the real service on the same socket takes the retry.
    async with serving(create_app(Settings()), sock) as served:
        with within(20):
            await anyio.to_thread.run_sync(thread.join)
        async with httpx.AsyncClient(base_url=served) as http:
            head = (await http.get("/events/head")).json()["id"]
            assert result["ids"] == [head]
            metrics = (await http.get("/metrics")).text
            assert "wsb_events_published_total 1.0" in metrics


async def test_a_4xx_raises_publish_error_at_once_with_no_retry(service: Service) -> None:
    flaky = Flaky(service.url, fail=0)
    async with stub(flaky) as url, AsyncPublisher(url, retry_for=30) as publisher:
        started = time.monotonic()
        with pytest.raises(PublishError) as caught:
            await publisher.publish([blog("p1"), {"type": "blog_update", "data": {"post_id": ""}}])
        assert time.monotonic() - started < 5 * FACTOR
    error = caught.value
    assert (error.status, error.error) == (422, "invalid_event")
    assert error.detail == "events[1].data.post_id: must be a non-empty string"
    assert len(flaky.keys) == 1
    assert await published_count(service) == 0


async def test_a_wrong_token_raises_401_at_once(start: Any) -> None:
    async with start(publish_token="s3cret") as svc:
        async with AsyncPublisher(svc.url, token="wrong", retry_for=30) as publisher:
            with pytest.raises(PublishError) as caught:
                await publisher.publish(blog())
        assert caught.value.status == 401
        async with AsyncPublisher(svc.url, token="s3cret") as publisher:
            assert len(await publisher.publish(blog())) == 1


async def test_a_service_that_never_answers_raises_after_retry_for() -> None:
    sock = listening_socket()  # takes connections, never answers: each try times out
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with AsyncPublisher(url, timeout=0.2, retry_for=1.0) as publisher:
            with within(10), pytest.raises(PublishError) as caught:
                await publisher.publish(blog())
        assert caught.value.status is None and caught.value.error == "unreachable"
    finally:
        sock.close()


def test_importing_the_client_loads_neither_starlette_nor_uvicorn() -> None:
    code = (
        "import sys, wsbroadcast.client\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn'))\n"
        "print(loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0", 0.0), ("soon", None), (None, None)],
    ids=["seconds", "zero", "not-a-time", "absent"],
)
def test_retry_after_is_read_as_seconds(header: str | None, seconds: float | None) -> None:
    assert _retry_after(header) == seconds


def test_retry_after_as_an_http_date_is_the_seconds_until_it() -> None:
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    wait = _retry_after(later)
    assert wait is not None and 25 <= wait <= 31
    assert _retry_after(email.utils.formatdate(time.time() - 30, usegmt=True)) == 0.0
