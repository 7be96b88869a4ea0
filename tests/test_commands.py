"""`wsbroadcast publish`, `tail` and `schema` as a user runs them: subprocesses against
real servers; tail outlives a restart of the service and prints every event once."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

import anyio
import orjson
import pytest

from tests.conftest import FACTOR, Service, free_port, receive, spawned
from tests.redis_server import RedisServer
from wsbroadcast.client import Publisher
from wsbroadcast.schemas import BUILTIN_SCHEMAS

COMMAND = [sys.executable, "-m", "wsbroadcast"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=60 * FACTOR,
        env={**os.environ, **(env or {})},
    )


async def run_async(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`run` in a thread: the service under test shares this event loop."""
    return await anyio.to_thread.run_sync(lambda: run(*args, env=env))


class Tail:
    """`wsbroadcast tail` in a subprocess: its stdout and stderr lines as they come."""

    def __init__(self, *args: str) -> None:
        self.out: list[str] = []
        self.err: list[str] = []
        self.changed = threading.Condition()
        self.popen = subprocess.Popen(
            [*COMMAND, "tail", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self.readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.popen.stdout, self.out), (self.popen.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            with self.changed:
                lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait(self, check: Callable[[], bool], seconds: float = 15) -> None:
        with self.changed:
            assert self.changed.wait_for(check, seconds * FACTOR), (self.out, self.err)

    def connections(self) -> int:
        return sum(line.startswith("wsbroadcast tail: connected") for line in self.err)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
        self.popen.wait(10 * FACTOR)
        for reader in self.readers:
            reader.join(5 * FACTOR)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.anyio
async def test_publish_prints_the_id_and_the_event_reaches_subscribers(service: Service) -> None:
    async with service.subscribe() as ws:
        done = await run_async(
            "publish",
            "blog_update",
            "post_id=p1",
            "action=created",
            "words=120",
            'tags=["a", "b"]',
            "--data",
            '{"title": "Hello", "words": 1}',
            "--url",
            service.url,
        )
        assert done.returncode == 0, done.stderr
        event = await receive(ws)
    assert done.stdout.splitlines() == [event["id"]]
    assert event["type"] == "blog_update"
    # Values are JSON when they parse, else strings; key=value wins over --data.
    assert event["data"] == {
        "post_id": "p1",
        "action": "created",
        "words": 120,
        "tags": ["a", "b"],
        "title": "Hello",
    }


@pytest.mark.anyio
async def test_publish_sends_the_token_from_the_environment(start: Any) -> None:
    async with start(publish_token="s3cret") as svc:
        refused = await run_async("publish", "blog_update", "post_id=p1", "action=created",
                                  "--url", svc.url)  # fmt: skip
        assert refused.returncode == 1
        assert refused.stderr.startswith("wsbroadcast publish: 401 unauthorized: ")
        done = await run_async(
            "publish", "blog_update", "post_id=p1", "action=created", "--url", svc.url,
            env={"WSB_PUBLISH_TOKEN": "s3cret"},
        )  # fmt: skip
        assert done.returncode == 0 and len(done.stdout.split()) == 1, done.stderr


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["blog_update", "post_id=p1"],
            "wsbroadcast publish: 422 invalid_event: "
            "data.action: must be one of created, updated, deleted",
        ),
        (["blog_update", "post_id"], "wsbroadcast publish: 'post_id': write key=value"),
        (["blog_update", "--data", "[1]"], "wsbroadcast publish: --data: must be a JSON object"),
    ],
    ids=["refused-event", "not-key-value", "data-not-an-object"],
)
async def test_publish_errors_are_one_line_and_a_non_zero_exit(
    service: Service, args: list[str], message: str
) -> None:
    done = await run_async("publish", *args, "--url", service.url)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [message]
    assert done.stdout == ""


def test_publish_to_a_bad_url_is_one_line() -> None:
    done = run("publish", "blog_update", "post_id=p1", "action=created", "--url", "nowhere")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "wsbroadcast publish: --url: 'nowhere' is not a base URL like http://127.0.0.1:8000"
    ]


def test_help_lists_the_subcommands() -> None:
    done = run("--help")
    assert done.returncode == 0
    for command in ("serve", "publish", "tail", "schema"):
        assert f"\n  {command} " in done.stdout
    assert "--broker-url" in done.stdout  # and still the settings of serve


def test_schema_prints_what_get_schema_answers() -> None:
    done = run("schema")
    assert done.returncode == 0
    assert orjson.loads(done.stdout) == {"strict": True, "types": BUILTIN_SCHEMAS}


def test_tail_prints_every_event_once_across_a_restart_of_the_service(
    redis_server: RedisServer,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flags = ("--port", str(port), "--broker-url", redis_server.url)
    tail = Tail("--url", url, "--types", "blog_update,system_notification")
    try:
        published: list[str] = []
        with spawned(*flags) as first:
            first.wait_ready()
            tail.wait(lambda: tail.connections() == 1)
            with Publisher(url) as publisher:
                published += publisher.publish([{"type": "blog_update", "data": {
                    "post_id": f"p{n}", "action": "created"}} for n in range(3)])  # fmt: skip
                publisher.publish({"type": "comment_update", "data": {
                    "post_id": "p0", "comment_id": "c", "action": "created"}})  # fmt: skip
            tail.wait(lambda: len(tail.out) == 3)
            assert first.terminate() == 0
        # Down: the tail keeps trying. Up again on the same port and the same Redis;
        # events published before the tail is back come to it by `since`.
        with spawned(*flags) as second:
            second.wait_ready()
            with Publisher(url) as publisher:
                published += publisher.publish({"type": "system_notification", "data": {
                    "message": "back", "level": "info"}})  # fmt: skip
            tail.wait(lambda: tail.connections() == 2 and len(tail.out) == 4)
            with Publisher(url) as publisher:
                published += publisher.publish(
                    {"type": "blog_update", "data": {"post_id": "p9", "action": "deleted"}}
                )
            tail.wait(lambda: len(tail.out) == 5)
            assert second.terminate() == 0
        events = [orjson.loads(line) for line in tail.out]
        assert [e["id"] for e in events] == published
        assert events[3]["data"] == {"message": "back", "level": "info"}
        assert set(events[0]) == {"id", "type", "data", "timestamp"}
        connected = [line for line in tail.err if "connected" in line]
        assert connected[1] == f"wsbroadcast tail: connected to {url} after {published[2]}"
        # Each outage the tail met is said once, however many tries it took.
        said = ["cannot reach" in line for line in tail.err]
        assert not any(a and b for a, b in itertools.pairwise(said)), tail.err
    finally:
        tail.stop()


@pytest.mark.anyio
async def test_tail_resumes_from_the_heartbeats_last_id_and_stops_on_4400() -> None:
    """A stub WebSocket server: an event, a heartbeat whose `last_id` is further on (a
    filtered stream moved past events it did not deliver), a drop; then a refusal."""
    from websockets.asyncio.server import ServerConnection, serve

    paths: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        paths.append(ws.request.path)
        if len(paths) == 1:
            event = {"id": "e:1-0", "type": "blog_update", "data": {"post_id": "p"},
                     "timestamp": "2024-01-01T00:00:00Z"}  # fmt: skip
            await ws.send(orjson.dumps(event).decode())
            beat = {"type": "heartbeat", "data": {"last_id": "e:7-0", "interval": 25},
                    "timestamp": "2024-01-01T00:00:01Z"}  # fmt: skip
            await ws.send(orjson.dumps(beat).decode())
            await ws.close(1001)
        else:
            await ws.close(4400, "types: 'Bad' cannot be an event type")

    async with serve(handler, "127.0.0.1", 0, subprotocols=["wsbroadcast"]) as server:  # type: ignore[list-item]
        port = server.sockets[0].getsockname()[1]
        tail = Tail("--url", f"http://127.0.0.1:{port}", "--post-id", "p")
        try:
            code = await anyio.to_thread.run_sync(lambda: tail.popen.wait(20 * FACTOR))
        finally:
            tail.stop()
    assert paths == ["/ws?post_id=p", "/ws?post_id=p&since=e%3A7-0"]
    assert code == 1
    assert len(tail.out) == 1 and orjson.loads(tail.out[0])["id"] == "e:1-0"
    assert tail.err[-1] == (
        "wsbroadcast tail: closed with 4400 (a bad query parameter): "
        "types: 'Bad' cannot be an event type"
    )


def test_serve_serves_with_its_settings_as_wsbroadcast_alone_does() -> None:
    port = free_port()
    with spawned("serve", "--port", str(port), "--heartbeat-seconds", "5") as server:
        server.wait_ready()
        done = run("publish", "blog_update", "post_id=p1", "action=created",
                   "--url", f"http://127.0.0.1:{port}")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert server.terminate() == 0
    assert f"127.0.0.1:{port}" in server.output
