"""Live readers: fan-out with every subscriber on one of 100 posts, against the same
subscribers with no `post_id`, and with `readers=1`; then `GET /readers` latency.

Each variant has its own wsbroadcast server and subscribers, all up at once, measured in
turn (A B C A B C). The deliveries are the same in each, and so is their shape: each POST
brings every subscriber one event. Without `post_id` a POST holds one event, for everyone;
with it, 100 (one per post), each for its post's subscribers. The fan-out writes a
subscriber's share of a batch in one write, so a variant whose POSTs gave each subscriber
more events at once would measure batch shapes, not the cost of filtering and counting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from bench.measure import (
    SETUP_NOTES,
    Meter,
    Plan,
    delivery_stats,
    disturbed,
    less_disturbed,
    pct,
    wait_for_quiet,
)
from bench.procs import Server, Workers
from bench.publisher import HttpConn, PostLog
from bench.report import brief

POSTS = 100
# POSTs in flight at once. One at a time, the POST's own turnaround was the limit, and a
# POST of 100 events (one per post) takes longer to accept than one of a single event:
# the variants differed by how fast one publisher could go, not by what the fan-out did
# (neither the server nor the load was at its core's limit).
PUBLISHERS = 4
PLACEHOLDER = b"@0000000000000000"
VARIANTS = {  # name -> the query each subscriber of post k connects with
    "no post_id": lambda k: "",
    "post_id": lambda k: f"?post_id=p{k}",
    "post_id readers=1": lambda k: f"?post_id=p{k}&readers=1",
}


def batch_body(first: int, count: int, pad: int) -> bytes:
    """`count` blog_update events for posts p0..p99 in turn, each with a send stamp."""
    events = [
        {
            "type": "blog_update",
            "data": {
                "post_id": f"p{(first + k) % POSTS}",
                "action": "updated",
                "message": "x" * max(1, pad),
                "ts": PLACEHOLDER.decode(),
            },
        }
        for k in range(count)
    ]
    return json.dumps(events, separators=(",", ":")).encode()


async def post_all(port: int, bodies: list[bytes], within: float) -> PostLog:
    """The batches on PUBLISHERS keep-alive connections, each posting its next batch as
    soon as the last is answered, each stamped as it goes."""
    log = PostLog()
    queue = iter(bodies)

    async def one(conn: HttpConn) -> None:
        for body in queue:  # shared: each batch is taken by one connection
            t = time.time()
            log.first_sent_at = log.first_sent_at or t
            log.sent += 1
            stamped = body.replace(PLACEHOLDER, b"@%016d" % (time.time_ns() // 1000))
            status, _ = await asyncio.wait_for(conn.request("POST", "/events", stamped), within)
            log.seconds.append(time.time() - t)
            if status == 202:
                log.accepted += 1
            else:
                log.refused[str(status)] = log.refused.get(str(status), 0) + 1

    conns = [await HttpConn.open(port) for _ in range(PUBLISHERS)]
    try:
        await asyncio.gather(*(one(conn) for conn in conns))
    finally:
        for conn in conns:
            conn.close()
    return log


class Variant:
    def __init__(self, name: str, plan: Plan) -> None:
        self.name = name
        self.server = Server("service", client_buffer=plan.client_buffer)
        self.workers = Workers(plan.workers)
        self.subscribers = 0

    async def start(self, n: int) -> None:
        await self.server.start()
        await self.workers.start()
        url = f"ws://127.0.0.1:{self.server.port}/ws"
        query = VARIANTS[self.name]
        for k in range(POSTS):  # subscriber i reads post i % 100
            share = n // POSTS + (1 if k < n % POSTS else 0)
            self.subscribers += (await self.workers.connect(url + query(k), share))["ok"]

    def bodies(self, per_subscriber: int, pad: int) -> list[bytes]:
        """One POST per event each subscriber gets: one event, or one for every post."""
        size = POSTS if self.name != "no post_id" else 1
        return [batch_body(k * size, size, pad) for k in range(per_subscriber)]


async def burst(v: Variant, plan: Plan) -> dict[str, Any]:
    per_sub = plan.readers_events
    meter = Meter(v.server, v.workers)
    await meter.start()
    log = await post_all(v.server.port, v.bodies(per_sub, plan.fanout_pad), within=60)
    replies = await v.workers.wait(per_sub, within=120, idle=10)
    last = max(r["last_at"] for r in replies)
    seconds = max(1e-6, last - log.first_sent_at)
    cpu = meter.stop(replies, seconds)
    d = delivery_stats(replies)
    return {
        "events": per_sub * (POSTS if v.name != "no post_id" else 1),
        "expected": v.subscribers * per_sub,
        **d,
        "seconds": round(seconds, 3),
        "deliveries_per_s": round(d["deliveries"] / seconds),
        "deliveries_per_cpu_s": round(d["deliveries"] / cpu["server_cpu_s"])
        if cpu["server_cpu_s"]
        else None,
        **cpu,
        "post": log.summary(),
    }


async def readers_latency(port: int, requests: int) -> dict[str, Any]:
    """GET /readers, one post's count and the top 10, on one keep-alive connection."""
    out: dict[str, Any] = {}
    conn = await HttpConn.open(port)
    try:
        for name, path in (("post", "/readers?post_id=p1"), ("top", "/readers?top=10")):
            times = []
            for _ in range(requests):
                t = time.perf_counter()
                status, body = await conn.request("GET", path)
                times.append((time.perf_counter() - t) * 1000)
                assert status == 200, body
            times.sort()
            out[f"{name}_p50_ms"] = pct(times, 50)
            out[f"{name}_p99_ms"] = pct(times, 99)
            out[f"{name}_answer"] = json.loads(body)
    finally:
        conn.close()
    return out


@contextlib.asynccontextmanager
async def variants_up(plan: Plan) -> AsyncIterator[list[Variant]]:
    up: list[Variant] = []
    try:
        for name in VARIANTS:
            up.append(Variant(name, plan))
            await up[-1].start(plan.readers_n)
            print(f"  readers: {name}: {up[-1].subscribers} subscribers", file=sys.stderr)
        await asyncio.sleep(2.0)  # the joins' reader counts go out within a second
        yield up
    finally:
        for v in up:
            SETUP_NOTES[f"{v.name}_stop"] = await asyncio.to_thread(v.server.stop)
        for v in up:
            await v.workers.stop()


async def run_readers(plan: Plan) -> dict[str, Any]:
    """Every variant, A B C each round; then GET /readers on the post_id server."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    latency: dict[str, Any] = {}
    async with variants_up(plan) as up:
        for r in range(plan.readers_rounds):
            for v in up:
                result = await _once(v, plan, r)
                if disturbed(result):
                    result = less_disturbed(result, await _once(v, plan, r))
                runs[v.name].append(result)
        latency = await readers_latency(up[1].server.port, plan.readers_requests)
        latency["subscribers"] = up[1].subscribers
        print(f"  readers: GET /readers {latency}", file=sys.stderr, flush=True)
    return {"runs": runs, "get_readers": latency}


async def _once(v: Variant, plan: Plan, r: int) -> dict[str, Any]:
    quiet = await wait_for_quiet()
    t = time.time()
    await v.workers.all("reset")
    try:
        result = await burst(v, plan)
    except Exception as exc:  # one failed measurement is reported, the bench goes on
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result.update(quiet, round=r + 1, wall_s=round(time.time() - t, 1))
    result["subscribers"] = v.subscribers
    print(f"  readers {v.name} round {r + 1}: {brief(result)}", file=sys.stderr, flush=True)
    return result
