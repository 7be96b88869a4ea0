"""The chaos harness: real `wsbroadcast` processes on a real `redis-server`, many subscribers
in one event loop, a publisher that keeps every answer, and a checker in the contract's words.

Sizes: `WSB_CHAOS=full` (`make chaos`) runs the issue's figures; otherwise (`make test`) each
scenario runs a bounded version of itself. Waits are bounded by `within`/`eventually`.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import anyio
import anyio.abc
import httpx
import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import FACTOR, Process, free_port, within

FULL = os.environ.get("WSB_CHAOS", "").lower() == "full"


def scaled(bounded: float, full: float) -> Any:
    """The issue's figure under `WSB_CHAOS=full`, a smaller one inside `make test`."""
    return full if FULL else bounded


# --- positions -------------------------------------------------------------------------


def position(event_id: str) -> tuple[str, int, int]:
    """An id's (epoch, ms, seq): clients never compare ids, the checker does."""
    epoch, _, place = event_id.rpartition(":")
    ms, _, seq = place.partition("-")
    return epoch, int(ms), int(seq)


def epoch_of(event_id: str) -> str:
    return event_id.rpartition(":")[0]


# --- instances -------------------------------------------------------------------------


class Instance:
    """One `python -m wsbroadcast` on a fixed port, so that it can come back on the same one."""

    def __init__(
        self, name: str, broker_url: str, *flags: str, fd_limit: int | None = None, **env: str
    ) -> None:
        self.name = name
        self.fd_limit = fd_limit  # `ulimit -n` for the process, from its start
        self.port = free_port()
        self.broker_url = broker_url
        self.flags = flags
        self.env = env
        self.process: Process | None = None
        self.logs: list[str] = []  # the output of every run that ended
        self.up = False  # whether /healthz must answer now

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.popen.pid

    async def start(self) -> None:
        """Start and wait for uvicorn to listen (the port is the same on every start)."""
        args = [
            sys.executable, "-m", "wsbroadcast", "--port", str(self.port),
            "--broker-url", self.broker_url, *self.flags,
        ]  # fmt: skip
        if self.fd_limit is not None:  # the shell sets the limit, then becomes the service
            args = ["sh", "-c", f'ulimit -n {self.fd_limit} && exec "$@"', "sh", *args]
        self.process = Process(args, self.env)
        await anyio.to_thread.run_sync(self.process.wait_ready, 20)
        self.up = True

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; every socket drops."""
        assert self.process is not None
        self.up = False
        self.process.popen.kill()
        self.process.popen.wait(10 * FACTOR)
        self._keep_log()

    async def terminate(self) -> int:
        """SIGTERM, and its exit status once the drain is done."""
        assert self.process is not None
        self.up = False
        self.process.popen.send_signal(signal.SIGTERM)
        status = await anyio.to_thread.run_sync(self.process.popen.wait, 15 * FACTOR)
        self._keep_log()
        return status

    def stop(self) -> None:
        if self.process is not None and self.process.popen.poll() is None:
            self.kill()
        elif self.process is not None:
            self._keep_log()

    def _keep_log(self) -> None:
        assert self.process is not None
        self.logs.append(self.process.output)
        if self.process.popen.stdout:
            self.process.popen.stdout.close()
        self.process = None

    def log(self) -> str:
        """Everything this instance wrote, every run so far."""
        now = "".join(self.process.lines) if self.process else ""
        return "".join(self.logs) + now

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_errors(text: str) -> list[str]:
    """Lines that say something went wrong: an error, a traceback, a crash."""
    bad = ("ERROR", "Traceback", "CRITICAL", "Exception")
    return [line for line in text.splitlines() if any(word in line for word in bad)]


async def metric(instance: Instance, name: str, http: httpx.AsyncClient) -> float:
    """One unlabelled sample of `name` from the instance's /metrics."""
    text = (await http.get(f"{instance.url}/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


# --- subscribers -----------------------------------------------------------------------

Transport = Literal["ws", "sse"]


@dataclasses.dataclass(eq=False)
class Subscriber:
    """One client that follows the contract's close-code table and always resumes with `since`.

    It starts on `instances[home]` and moves to the next instance when its own goes away.
    """

    number: int
    instances: Sequence[Instance]
    transport: Transport = "ws"
    home: int = 0
    address: str = "127.0.0.1"
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    ids: list[str] = dataclasses.field(default_factory=list)
    seen: set[str] = dataclasses.field(default_factory=set)
    resyncs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    closes: list[int | None] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)  # connects that failed
    latencies: list[float] = dataclasses.field(default_factory=list)
    numbers: dict[str, int] = dataclasses.field(default_factory=dict)  # id -> publisher's number
    connects: int = 0
    last_id: str | None = None
    connected: anyio.Event = dataclasses.field(default_factory=anyio.Event)
    _ws: ClientConnection | None = None
    _http: httpx.AsyncClient = dataclasses.field(init=False)
    _connection: anyio.CancelScope | None = None

    @property
    def instance(self) -> Instance:
        return self.instances[self.home % len(self.instances)]

    def _moved(self) -> None:
        self.home += 1

    def _take(self, message: dict[str, Any]) -> None:
        if message["type"] == "resync":
            self.resyncs.append(message)
            self.last_id = message["data"]["head"]  # a valid `since` from now on
            return
        if "id" not in message:
            return  # heartbeat, readers: control messages carry no id
        event_id = message["id"]
        self.ids.append(event_id)
        self.seen.add(event_id)
        self.last_id = event_id
        if isinstance(message["data"].get("n"), int):
            self.numbers[event_id] = message["data"]["n"]
        sent = message["data"].get("sent")
        if isinstance(sent, float):
            self.latencies.append(time.time() - sent)

    async def run(self, stop: anyio.Event) -> None:
        """Stay subscribed until `stop`, reconnecting as the contract tells a client to."""
        with anyio.CancelScope() as scope:

            async def stopper() -> None:
                await stop.wait()
                scope.cancel()

            # One HTTP client for the subscriber's life, from its own address; plain HTTP,
            # so no CA bundle is loaded (that alone took 16 s for 200 subscribers).
            transport = httpx.AsyncHTTPTransport(local_address=self.address, verify=False)
            timeout = httpx.Timeout(10 * FACTOR, read=None)
            async with (
                httpx.AsyncClient(transport=transport, timeout=timeout, verify=False) as http,
                anyio.create_task_group() as tasks,
            ):
                self._http = http
                tasks.start_soon(stopper)
                await self._loop()

    async def _head(self) -> None:
        """Start from `/events/head`, as a page rendered on the server does: from then on
        every reconnect has a `since`, even one before the first event."""
        while self.last_id is None:
            try:
                response = await self._http.get(f"{self.instance.url}/events/head")
            except httpx.HTTPError as exc:
                self.failures.append(f"{self.instance.name}: head: {type(exc).__name__}")
                self._moved()
                await anyio.sleep(random.uniform(0, 0.5))
                continue
            if response.status_code == 200:
                self.last_id = response.json()["id"]
            else:
                await anyio.sleep(random.uniform(0, 0.5))  # 503: Redis away; back off

    async def _loop(self) -> None:
        await self._head()
        backoff = 0.05
        while True:
            before = self.connects
            try:
                with anyio.CancelScope() as self._connection:
                    if self.transport == "ws":
                        code = await self._ws_once()
                    else:
                        code = await self._sse_once()
                if self._connection.cancelled_caught:
                    code = 1000  # our own goodbye (`drop`)
            except (OSError, TimeoutError, websockets.InvalidHandshake, httpx.HTTPError) as exc:
                self.failures.append(f"{self.instance.name}: {type(exc).__name__}: {exc}")
                code = None
            self.closes.append(code)
            if code in (4400, 4401, 4403):
                return  # the contract: do not retry unchanged
            if code in (1001, None):
                self._moved()  # reconnect elsewhere
            if self.connects > before:
                backoff = 0.05
            await anyio.sleep(random.uniform(0, backoff))  # the contract's random delay
            backoff = min(backoff * 2, 1.0)

    def _query(self) -> str:
        params = dict(self.params)
        if self.last_id is not None:
            params["since"] = self.last_id
        query = str(httpx.QueryParams(params))
        return f"?{query}" if query else ""

    async def _ws_once(self) -> int | None:
        url = f"{self.instance.ws_url}/ws{self._query()}"
        ws: ClientConnection
        async with websockets.connect(
            url,
            max_queue=None,
            compression=None,
            open_timeout=10 * FACTOR,
            local_addr=(self.address, 0),
        ) as ws:
            self.connects += 1
            self.connected.set()
            self._ws = ws
            try:
                async for raw in ws:
                    self._take(orjson.loads(raw))
            except websockets.ConnectionClosed:
                pass
            finally:
                self._ws = None
            return ws.close_code if ws.close_code != 1006 else None

    async def drop(self) -> None:
        """Leave, as a closed tab does; `run` comes back with `since`."""
        if self._ws is not None:
            await self._ws.close()  # a WebSocket's own close handshake, code 1000
        elif self._connection is not None:
            self._connection.cancel()  # an EventSource closed: the stream is dropped

    async def _sse_once(self) -> int | None:
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        params = dict(self.params)
        async with self._http.stream(
            "GET", f"{self.instance.url}/sse", params=params, headers=headers
        ) as r:
            if r.status_code != 200:
                return {429: 4429, 503: 1013, 401: 4401, 403: 4403, 400: 4400}.get(
                    r.status_code, r.status_code
                )
            self.connects += 1
            self.connected.set()
            data: list[str] = []
            try:
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        self._take(orjson.loads("\n".join(data)))
                        data = []
            except (httpx.RemoteProtocolError, httpx.ReadError):
                return None  # cut without the stream's end
        return 1001  # the stream ended: the server went away, resume elsewhere


def spread(
    count: int,
    instances: Sequence[Instance],
    *,
    per_address: int = 10,
    sse_every: int = 0,
    params: dict[str, str] | None = None,
) -> list[Subscriber]:
    """`count` subscribers, homes taken in turn, `per_address` to each 127.0.0.x address
    (the connect rate limit counts per address, as it would for many browsers)."""
    return [
        Subscriber(
            number,
            instances,
            transport="sse" if sse_every and number % sse_every == 0 else "ws",
            home=number % len(instances),
            address=f"127.0.0.{2 + number // per_address}",
            params=dict(params or {}),
        )
        for number in range(count)
    ]


async def all_connected(subscribers: Sequence[Subscriber], seconds: float = 60) -> None:
    with within(seconds):
        for subscriber in subscribers:
            await subscriber.connected.wait()


# --- the publisher ---------------------------------------------------------------------


@dataclasses.dataclass
class Refusal:
    instance: str
    status: int
    retry_after: str | None
    body: str


def event(number: int, size: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = {"post_id": f"p{number % 7}", "action": "created", "n": number}
    data["sent"] = time.time()
    if size:
        data["pad"] = "x" * size
    return {"type": "blog_update", "data": data}


class Publisher:
    """Posts events at a steady rate, each with its own Idempotency-Key, and keeps every answer.

    A refused or failed try is tried again on the next instance, as `wsbroadcast.client`
    would, until `retry_for` seconds have passed for that event.
    """

    def __init__(
        self,
        instances: Sequence[Instance],
        rate: float,
        *,
        size: int = 0,
        retry_for: float = 30.0,
        base_url: str | None = None,
    ) -> None:
        self.instances = instances
        self.rate = rate
        self.size = size
        self.retry_for = retry_for
        self.base_url = base_url
        self.acked: dict[int, list[str]] = {}  # event number -> its ids from a 202
        self.given_up: list[int] = []
        self.refusals: list[Refusal] = []
        self.errors: list[str] = []
        self.statuses: list[int] = []
        self.unanswered: set[int] = set()  # events a try of which got a 5xx or no answer
        self.ack_seconds: list[float] = []  # from an event's first try to its 202
        self.posted = 0
        self.behind = 0.0  # the most seconds the publisher fell behind its rate
        self._turn = 0
        # POSTs in flight at most: past it the rate falls behind (and `behind` says so)
        # rather than piling up requests; httpcore's pool is slow with thousands waiting.
        self._in_flight = anyio.Semaphore(32)

    @property
    def acked_ids(self) -> set[str]:
        return {i for ids in self.acked.values() for i in ids}

    def acked_in(self, epoch: str) -> set[str]:
        return {i for i in self.acked_ids if epoch_of(i) == epoch}

    async def run(self, stop: anyio.Event) -> None:
        """Publish until `stop`, then wait for every try in flight to end."""
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
        async with (
            httpx.AsyncClient(timeout=10 * FACTOR, limits=limits) as http,
            anyio.create_task_group() as tasks,
        ):
            started = time.monotonic()
            number = 0
            while not stop.is_set():
                due = started + number / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    with anyio.move_on_after(delay):  # the load's own clock
                        await stop.wait()
                    if stop.is_set():
                        break
                await self._in_flight.acquire()
                self.behind = max(self.behind, time.monotonic() - due)
                tasks.start_soon(self._publish, http, number)
                number += 1
            self.posted = number

    def _next_url(self) -> tuple[str, str]:
        if self.base_url is not None:
            return "proxy", self.base_url
        for _ in range(len(self.instances)):
            instance = self.instances[self._turn % len(self.instances)]
            self._turn += 1
            if instance.up:
                return instance.name, instance.url
        instance = self.instances[self._turn % len(self.instances)]
        return instance.name, instance.url

    async def _publish(self, http: httpx.AsyncClient, number: int) -> None:
        try:
            await self._try(http, number)
        finally:
            self._in_flight.release()

    async def _try(self, http: httpx.AsyncClient, number: int) -> None:
        body = orjson.dumps(event(number, self.size))
        headers = {"content-type": "application/json", "idempotency-key": f"chaos-{number}"}
        began = time.monotonic()
        deadline = began + self.retry_for * FACTOR
        delay = 0.05
        while time.monotonic() < deadline:
            name, url = self._next_url()
            try:
                response = await http.post(f"{url}/events", content=body, headers=headers)
            except httpx.HTTPError as exc:
                self.errors.append(f"{name}: {type(exc).__name__}")
                self.unanswered.add(number)
            else:
                self.statuses.append(response.status_code)
                if response.status_code == 202:
                    self.acked[number] = response.json()["ids"]
                    self.ack_seconds.append(time.monotonic() - began)
                    return
                retry_after = response.headers.get("retry-after")
                self.refusals.append(
                    Refusal(name, response.status_code, retry_after, response.text)
                )
                if response.status_code < 500:
                    return  # a 4xx is final; a 5xx is retried, as wsbroadcast.client does
                self.unanswered.add(number)
                if retry_after and retry_after.isdigit():
                    delay = max(delay, min(float(retry_after), 2.0))
            await anyio.sleep(random.uniform(delay / 2, delay))  # the client's backoff
            delay = min(delay * 2, 1.0)
        self.given_up.append(number)


# --- health ----------------------------------------------------------------------------


class Health:
    """Asks every instance that should be up for /healthz, all along; keeps each failure."""

    def __init__(self, instances: Sequence[Instance], every: float = 0.25) -> None:
        self.instances = instances
        self.every = every
        self.failures: list[str] = []
        self.answers = 0
        self.slowest = 0.0

    async def run(self, stop: anyio.Event) -> None:
        async with httpx.AsyncClient(timeout=5 * FACTOR) as http:
            while not stop.is_set():
                for instance in list(self.instances):
                    if not instance.up:
                        continue
                    began = time.monotonic()
                    try:
                        response = await http.get(f"{instance.url}/healthz")
                    except httpx.HTTPError as exc:
                        if instance.up:  # not taken down while we asked
                            self.failures.append(f"{instance.name}: {type(exc).__name__}")
                        continue
                    self.slowest = max(self.slowest, time.monotonic() - began)
                    if response.status_code != 200 and instance.up:
                        self.failures.append(f"{instance.name}: {response.status_code}")
                    else:
                        self.answers += 1
                with anyio.move_on_after(self.every):  # the probe's own interval
                    await stop.wait()


# --- the checker -----------------------------------------------------------------------


def delivery_problems(
    subscribers: Sequence[Subscriber],
    acked: set[str],
    *,
    expected: Callable[[Subscriber], set[str]] | None = None,
) -> list[str]:
    """What broke the contract, in its words; empty when nothing did.

    Every acknowledged id (or `expected(s)` of them) delivered to every subscriber, in
    order, at most once, and nothing that was not acknowledged.
    """
    problems: list[str] = []
    for s in subscribers:
        want = expected(s) if expected else acked
        missing = want - s.seen
        if missing:
            problems.append(
                f"subscriber {s.number} ({s.transport}): {len(missing)} acknowledged events "
                f"never delivered, e.g. {sorted(missing, key=position)[:3]}"
            )
        if len(s.ids) != len(s.seen):
            count: dict[str, int] = {}
            for i in s.ids:
                count[i] = count.get(i, 0) + 1
            twice = [i for i, c in count.items() if c > 1]
            problems.append(
                f"subscriber {s.number} ({s.transport}): {len(twice)} events delivered more "
                f"than once, e.g. {twice[:3]}"
            )
        unacked = s.seen - acked
        if unacked:
            problems.append(
                f"subscriber {s.number} ({s.transport}): {len(unacked)} events delivered that "
                f"were never acknowledged, e.g. {sorted(unacked)[:3]}"
            )
        for before, after in zip(s.ids, s.ids[1:], strict=False):
            a, b = position(before), position(after)
            if a[0] == b[0] and a[1:] >= b[1:]:
                problems.append(
                    f"subscriber {s.number} ({s.transport}): {after} delivered after {before}"
                )
                break
    return problems


async def delivered(
    subscribers: Sequence[Subscriber],
    want: Callable[[Subscriber], set[str]],
    seconds: float = 60,
) -> None:
    """Wait, within a bound, until every subscriber has what it should; then return."""
    with anyio.move_on_after(seconds * FACTOR):
        while not all(want(s) <= s.seen for s in subscribers):  # noqa: ASYNC110
            await anyio.sleep(0.1)  # polled: nothing to await but the clients' progress


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- running the pieces ----------------------------------------------------------------


class Background:
    """Tasks that run until their `stop` is set; `finish()` sets it and waits for them."""

    def __init__(self, tasks: anyio.abc.TaskGroup) -> None:
        self.tasks = tasks
        self.stop = anyio.Event()
        self._running = 0
        self._done = anyio.Event()

    def start(self, run: Callable[[anyio.Event], Any]) -> None:
        self._running += 1

        async def wrapped() -> None:
            try:
                await run(self.stop)
            finally:
                self._running -= 1
                if not self._running:
                    self._done.set()

        self.tasks.start_soon(wrapped)

    async def finish(self, seconds: float = 60) -> None:
        self.stop.set()
        if self._running:
            with within(seconds):
                await self._done.wait()


async def until(check: Callable[[], bool], seconds: float = 60) -> None:
    """Wait, within a bound, for a condition of the clients' own progress."""
    with within(seconds):
        while not check():  # noqa: ASYNC110 - many clients, no one event to await
            await anyio.sleep(0.05)


async def acked_at_least(publisher: Publisher, count: int, seconds: float = 60) -> None:
    """Wait, within a bound, for `count` events acknowledged in all."""
    await until(lambda: len(publisher.acked) >= count, seconds)


async def ready(instance: Instance, seconds: float = 30) -> None:
    """Wait, within a bound, for the instance's /readyz to say 200."""
    async with httpx.AsyncClient(timeout=5 * FACTOR) as http:
        with within(seconds):
            while True:
                try:
                    if (await http.get(f"{instance.url}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await anyio.sleep(0.05)  # polled: readiness is only seen from outside


def report(scenario: str, **figures: Any) -> None:
    """One line of figures for docs/reliability.md (`pytest -s` shows it)."""
    shown = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"\n[chaos] {scenario}{' (full)' if FULL else ''}: {shown}")
