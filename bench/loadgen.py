"""Load generator worker: WebSocket subscribers on picows + uvloop, driven by JSON lines on stdin.

One process holds a share of the subscribers. It answers each command with one JSON line on
stdout. Latency is read from the frame itself: the publisher puts `"@<unix time in µs>"` into the
event's `data`, so a receipt costs one `bytes.find` and one `int()`, never a JSON parse.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import sys
import time
from array import array
from typing import Any
from urllib.parse import quote

import picows
import uvloop

MARK = b'"@'  # the send stamp: the string "@1764100000123456" (16 digits of µs)
SEQ = b'"seq":'  # the publisher's sequence number in `data` (tracked subscribers only)
ID = b'{"id":"'  # every event frame begins with its id
TEXT = picows.WSMsgType.TEXT
CLOSE = picows.WSMsgType.CLOSE


def cpu_seconds() -> float:
    """This process's user + system CPU time."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Worker:
    """All subscribers of this process and what they received since the last reset."""

    def __init__(self) -> None:
        self.subs: list[Subscriber] = []
        self.lat = array("q")  # µs, one per delivery
        self.received = 0
        self.first_at = 0  # µs, first receipt since reset
        self.last_at = 0  # µs, last receipt since reset
        self.target = 0
        self.waiter: asyncio.Future[None] | None = None
        self.closes: dict[str, int] = {}
        self.closed_at: list[float] = []
        self.dropped: list[tuple[str, int]] = []  # (last id, next seq) of each dropped one
        self.resume_started = 0.0

    def reset(self) -> None:
        self.lat = array("q")
        self.received = 0
        self.first_at = 0
        self.last_at = 0
        for s in self.subs:
            s.count = 0


class Subscriber(picows.WSListener):
    """One subscriber: counts text frames carrying a send stamp, records their latency."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.count = 0
        self.open = False
        self.close_code: int | None = None
        self.transport: picows.WSTransport | None = None

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        self.open = True
        self.transport = transport

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        mt = frame.msg_type
        if mt is TEXT:
            self.text(frame.get_payload_as_bytes())
        elif mt is CLOSE:
            code = frame.get_close_code()
            self.close_code = code.value if isinstance(code, picows.WSCloseCode) else int(code)
            transport.send_close(picows.WSCloseCode.OK)
            transport.disconnect()

    def text(self, p: bytes) -> None:
        i = p.find(MARK)
        if i < 0:
            return  # heartbeat or another control message
        w = self.w
        now = time.time_ns() // 1000
        w.lat.append(now - int(p[i + 2 : i + 18]))
        self.count += 1
        w.received += 1
        if not w.first_at:
            w.first_at = now
        w.last_at = now
        if w.waiter is not None and w.received >= w.target and not w.waiter.done():
            w.waiter.set_result(None)

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        if self.open:
            self.open = False
            key = str(self.close_code) if self.close_code is not None else "cut"
            self.w.closes[key] = self.w.closes.get(key, 0) + 1
            self.w.closed_at.append(time.time())


class Tracked(Subscriber):
    """A subscriber that checks the publisher's `seq` numbers (none missed, none twice) and
    keeps the last id, to resume with `since` after a drop."""

    def __init__(self, worker: Worker, expect: int = -1, catchup: int = -1) -> None:
        super().__init__(worker)
        self.expect = expect  # the next seq due; -1: whatever comes first
        self.missed = 0
        self.dups = 0
        self.last = b""  # the last event's frame
        self.catchup = catchup  # the seq that means "resumed": the newest one it had missed
        self.caught_at = 0.0
        self.connected_at = 0.0

    def on_ws_connected(self, transport: picows.WSTransport) -> None:
        super().on_ws_connected(transport)
        self.connected_at = time.time()

    def text(self, p: bytes) -> None:
        # Once per frame, a million times in a storm: the payload is read once, and the
        # last id is kept as the frame itself, decoded only when it is needed (a drop).
        j = p.find(SEQ)
        if j >= 0 and p.startswith(ID):
            seq = int(p[j + 6 : p.find(b",", j)])
            expect = self.expect
            if seq == expect or expect < 0:
                pass
            elif seq < expect:
                self.dups += 1
            else:
                self.missed += seq - expect
            if seq >= expect:
                self.expect = seq + 1
            self.last = p
            if 0 <= self.catchup <= seq and not self.caught_at:
                self.caught_at = time.time()
        super().text(p)

    @property
    def last_id(self) -> str:
        p = self.last
        return p[7 : p.find(b'"', 7)].decode() if p else ""


async def connect(
    worker: Worker,
    url: str,
    n: int,
    concurrency: int,
    sources: list[str] | None = None,
    track: bool = False,
    resume: list[tuple[str, int]] | None = None,
    catchup: int = -1,
    query: str = "",
) -> dict[str, Any]:
    """Open n subscribers, at most `concurrency` handshakes in flight; from the source
    addresses given in turn (bound before connect: each address has its own ephemeral
    ports); tracked ones check their seq numbers; `resume`: one per (last id, next seq),
    with `since`."""
    sem = asyncio.Semaphore(concurrency)
    errors: dict[str, int] = {}
    ok = 0

    async def one(i: int) -> None:
        nonlocal ok
        kw: dict[str, Any] = {}
        if sources:
            kw["local_addr"] = (sources[i % len(sources)], 0)
        target = url + query
        if resume is not None:
            last_id, expect = resume[i]
            target = f"{url}?since={quote(last_id, safe='')}"

            def factory() -> Subscriber:
                return Tracked(worker, expect, catchup)
        elif track:

            def factory() -> Subscriber:
                return Tracked(worker)
        else:

            def factory() -> Subscriber:
                return Subscriber(worker)

        async with sem:
            try:
                _, sub = await picows.ws_connect(
                    factory,
                    target,
                    websocket_handshake_timeout=60,
                    read_buffer_init_size=4096,
                    max_frame_size=1 << 20,
                    **kw,
                )
            except Exception as exc:  # counted and reported, never fatal for the run
                key = type(exc).__name__ + ": " + str(exc)[:80]
                errors[key] = errors.get(key, 0) + 1
                return
            if not isinstance(sub, Subscriber):  # seen in a storm on a starved machine
                key = f"ws_connect returned {type(sub).__name__}"
                errors[key] = errors.get(key, 0) + 1
                return
            worker.subs.append(sub)
            ok += 1

    started = time.time()
    await asyncio.gather(*(one(i) for i in range(n)))
    return {"ok": ok, "failed": n - ok, "errors": errors, "started": started, "ended": time.time()}


def drop(worker: Worker) -> dict[str, Any]:
    """Every subscriber goes at once (as browsers do when a deploy cuts them), remembering
    where it was, to come back with `since`."""
    worker.dropped = []
    for s in worker.subs:
        assert isinstance(s, Tracked), "only tracked subscribers can resume"
        worker.dropped.append((s.last_id, s.expect))
        s.open = False  # a close we asked for is not the server's doing
        if s.transport is not None:
            s.transport.disconnect()
    gone = len(worker.subs)
    worker.subs = []
    return {"dropped": gone, "without_id": sum(1 for i, _ in worker.dropped if not i)}


async def resume(
    worker: Worker, url: str, concurrency: int, sources: list[str] | None, catchup: int
) -> dict[str, Any]:
    """Every dropped subscriber back at once, each with `since` its last id."""
    worker.resume_started = time.time()
    got = await connect(
        worker,
        url,
        len(worker.dropped),
        concurrency,
        sources,
        resume=worker.dropped,
        catchup=catchup,
    )
    tracked = [s for s in worker.subs if isinstance(s, Tracked)]
    connected = sorted(s.connected_at - worker.resume_started for s in tracked)
    got["connected_s_max"] = round(connected[-1], 3) if connected else None
    got["connected_s_p50"] = round(connected[len(connected) // 2], 3) if connected else None
    return got


async def wait_seq(
    worker: Worker, seq: int, within: float, idle: float, latency: bool = True
) -> dict[str, Any]:
    """Until every tracked subscriber has had `seq` (or time runs out, or nothing moves for
    `idle` s): what each missed or got twice, and when each resumed."""
    tracked = [s for s in worker.subs if isinstance(s, Tracked)]
    deadline = time.monotonic() + within
    last_seen, last_change = worker.received, time.monotonic()
    while any(s.expect <= seq for s in tracked):
        now = time.monotonic()
        if now >= deadline:
            break
        if worker.received != last_seen:
            last_seen, last_change = worker.received, now
        elif now - last_change >= idle:
            break
        await asyncio.sleep(0.1)
    out = stats(worker, with_latency=latency)
    caught = sorted(s.caught_at - worker.resume_started for s in tracked if s.caught_at)
    out.update(
        tracked=len(tracked),
        missed=sum(s.missed for s in tracked),
        duplicated=sum(s.dups for s in tracked),
        with_gap_or_dup=sum(1 for s in tracked if s.missed or s.dups),
        reached=sum(1 for s in tracked if s.expect > seq),
        exact=sum(1 for s in tracked if s.expect == seq + 1 and not s.missed and not s.dups),
        resumed=len(caught),
        resumed_s_p50=round(caught[len(caught) // 2], 3) if caught else None,
        resumed_s_max=round(caught[-1], 3) if caught else None,
    )
    return out


async def wait_for(worker: Worker, per_sub: int, within: float, idle: float) -> dict[str, Any]:
    """Wait for `per_sub` deliveries to each subscriber since reset (in all), for at most
    `within` seconds, or until `idle` seconds pass with none."""
    target = worker.target = per_sub * len(worker.subs)
    deadline = time.monotonic() + within
    last_seen, last_change = worker.received, time.monotonic()
    while worker.received < target:
        now = time.monotonic()
        if now >= deadline:
            break
        if worker.received != last_seen:
            last_seen, last_change = worker.received, now
        elif now - last_change >= idle:
            break
        worker.waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(worker.waiter, timeout=min(0.25, deadline - now))
        except TimeoutError:
            pass
    worker.waiter = None
    return stats(worker, with_latency=True, per_sub=per_sub)


def stats(worker: Worker, with_latency: bool, per_sub: int = 0) -> dict[str, Any]:
    counts = [s.count for s in worker.subs]
    out: dict[str, Any] = {
        "received": worker.received,
        "subscribers": len(worker.subs),
        "open": sum(1 for s in worker.subs if s.open),
        "min_count": min(counts, default=0),
        "max_count": max(counts, default=0),
        "complete": sum(1 for c in counts if c >= per_sub),
        "first_at": worker.first_at / 1e6,
        "last_at": worker.last_at / 1e6,
        "closes": dict(worker.closes),
        "cpu": cpu_seconds(),
        "rss_kb": rss_kb(),
    }
    if with_latency:
        out["lat_us"] = base64.b64encode(worker.lat.tobytes()).decode()
    return out


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


async def serve() -> None:
    worker = Worker()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"ready": True, "pid": os.getpid(), "cpu": cpu_seconds()})
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "connect":
            reply(
                await connect(
                    worker,
                    cmd["url"],
                    cmd["n"],
                    cmd.get("concurrency", 100),
                    cmd.get("sources"),
                    cmd.get("track", False),
                    query=cmd.get("query", ""),
                )
            )
        elif op == "drop":
            reply(drop(worker))
        elif op == "resume":
            reply(
                await resume(
                    worker, cmd["url"], cmd["concurrency"], cmd.get("sources"), cmd["catchup"]
                )
            )
        elif op == "wait_seq":
            reply(
                await wait_seq(
                    worker,
                    cmd["seq"],
                    cmd["timeout"],
                    cmd.get("idle", 10.0),
                    cmd.get("latency", True),
                )
            )
        elif op == "reset":
            worker.reset()
            reply({"ok": True, "cpu": cpu_seconds()})
        elif op == "wait":
            reply(await wait_for(worker, cmd["per_sub"], cmd["timeout"], cmd.get("idle", 10.0)))
        elif op == "stats":
            reply(stats(worker, cmd.get("latency", False), cmd.get("per_sub", 0)))
        elif op == "close":
            for s in worker.subs:
                s.open = False  # a close we asked for is not the server's doing
            reply({"ok": True, "cpu": cpu_seconds()})
            break
        else:
            reply({"error": f"unknown op {op!r}"})


if __name__ == "__main__":
    uvloop.run(serve())
