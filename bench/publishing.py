"""The publish scenario: how fast the service takes events in, with subscribers attached.

Batches of 500 events, then single-event POSTs, each over `publish_conns` keep-alive
connections posting back to back side by side (the client is the raw HTTP/1.1 one in
publisher.py, on the load core). Attached: `publish_filtered` subscribers to another type
(the fan-out checks each event against each, and sends them nothing) and one subscriber
that gets every event, so the figure includes delivery and says whether all arrived. A
subscriber sent every event would turn the figure into a fan-out one: at 20,000 events/s,
1,000 of them would need 20 million deliveries a second. The service only.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from bench.measure import SETUP_NOTES, Meter, Plan, wait_for_quiet, ws_url
from bench.procs import Server, Workers, split
from bench.publisher import HttpConn, Publisher, event_body

ZERO = b"@0000000000000000"


def batch_body(first_seq: int, n: int, pad: int) -> bytes:
    return b"[" + b",".join(event_body(first_seq + k, pad) for k in range(n)) + b"]"


async def _post_all(port: int, bodies: list[bytes]) -> dict[str, Any]:
    """POST each body in turn on one keep-alive connection, every event stamped at send."""
    conn = await HttpConn.open(port)
    statuses: dict[str, int] = {}
    try:
        for body in bodies:
            stamped = body.replace(ZERO, b"@%016d" % (time.time_ns() // 1000))
            status, _ = await conn.request("POST", "/events", stamped)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
    finally:
        conn.close()
    return statuses


async def _phase(
    port: int, bodies: list[bytes], per_body: int, conns: int
) -> tuple[dict[str, Any], float]:
    shares = split(len(bodies), conns)
    parts, at = [], 0
    for k in shares:
        parts.append(bodies[at : at + k])
        at += k
    t = time.time()
    replies = await asyncio.gather(*(_post_all(port, p) for p in parts))
    seconds = time.time() - t
    statuses: dict[str, int] = {}
    for r in replies:
        for code, n in r.items():
            statuses[code] = statuses.get(code, 0) + n
    accepted = statuses.get("202", 0)
    return {
        "requests": len(bodies),
        "statuses": statuses,
        "events_accepted": accepted * per_body,
        "seconds": round(seconds, 3),
        "requests_per_s": round(accepted / seconds),  # accepted ones (202)
        "answered_per_s": round(len(bodies) / seconds),  # any answer (a 503 too)
        "events_per_s": round(accepted * per_body / seconds),
    }, t


async def run_publish(plan: Plan) -> dict[str, dict[str, Any]]:
    """Two runs: `batch 500` and `single`."""
    SETUP_NOTES.clear()
    SETUP_NOTES.update(await wait_for_quiet())
    server = Server("service", client_buffer=plan.client_buffer, name="service-publish")
    await server.start()
    workers = Workers(1)
    pub = Publisher(server.port)
    out: dict[str, dict[str, Any]] = {}
    try:
        await workers.start()
        url = ws_url(server)
        filtered = await workers.connect(url, plan.publish_filtered, query="?types=comment_update")
        reader = await workers.connect(url, 1)
        # The warm-up reaches only the reader: its count is the total.
        await pub.back_to_back(1, 1, 0, within=30)
        await _wait_total(workers, 1, within=30)
        seq = 1
        batch_bodies = []
        for _ in range(plan.publish_batches):
            batch_bodies.append(batch_body(seq, plan.publish_batch, 1))
            seq += plan.publish_batch
        singles = [event_body(seq + k, 1) for k in range(plan.publish_singles)]
        for label, bodies, per, conns in (
            (f"batch {plan.publish_batch}", batch_bodies, plan.publish_batch, plan.publish_conns),
            ("single", singles, 1, plan.publish_single_conns),
        ):
            quiet = await wait_for_quiet()
            await workers.all("reset")
            meter = Meter(server, workers)
            await meter.start()
            result, t0 = await _phase(server.port, bodies, per, conns)
            cpu = meter.stop(await workers.all("stats"), result["seconds"])
            expected = result["events_accepted"]
            # Only the reader gets events: the total is its count.
            got = await _wait_total(workers, expected, within=60)
            result.update(
                cpu,
                connections=conns,
                **quiet,
                subscribers_filtered=filtered["ok"],
                readers=reader["ok"],
                reader_received=got["received"],
                every_event_delivered=got["received"] == expected,
                delivered_s_after_first_post=round(got["last_at"] - t0, 3)
                if got["last_at"]
                else None,
                # Accepted is not delivered: the hub fans out behind the POSTs' answers.
                delivered_events_per_s=round(got["received"] / (got["last_at"] - t0))
                if got["last_at"] > t0
                else None,
                server_closes=got["closes"],
            )
            print(f"  publish {label}: {json.dumps(_short(result))}", flush=True, file=sys.stderr)
            out[label] = result
    finally:
        pub.close()
        SETUP_NOTES.update(await asyncio.to_thread(server.stop))
        await workers.stop()
    return out


async def _wait_total(workers: Workers, expected: int, within: float) -> dict[str, Any]:
    """Until the reader has `expected` events since reset (bounded; the counts are read
    every 0.1 s)."""
    deadline = time.monotonic() + within
    while True:
        (stats,) = await workers.all("stats")
        if stats["received"] >= expected or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.1)


def _short(result: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "events_per_s",
        "delivered_events_per_s",
        "requests_per_s",
        "answered_per_s",
        "statuses",
        "every_event_delivered",
    )
    return {k: result[k] for k in (*keys, "server_cpu_util", "load_cpu_util") if k in result}
