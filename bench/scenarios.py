"""The scenarios but the slow one (slow.py): fan-out, latency, memory, connect.

Fan-out and latency measure servers that stay up side by side, A B A B on the same
subscribers; memory and connect need a fresh server for each measurement.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.measure import (
    SETUP_NOTES,
    Meter,
    Plan,
    bench_setup,
    delivery_stats,
    disturbed,
    less_disturbed,
    merge_closes,
    wait_for_quiet,
    warm_up,
    ws_url,
)
from bench.procs import Server, Workers
from bench.publisher import Publisher
from bench.report import brief


@dataclass
class Side:
    """One server of a pair, with its own load process and publisher."""

    kind: str
    server: Server
    workers: Workers
    pub: Publisher
    subscribers: int = 0


@contextlib.asynccontextmanager
async def paired_setup(kinds: tuple[str, ...], plan: Plan, n: int) -> AsyncIterator[list[Side]]:
    """Every server up at once, each with n subscribers on its own load process (one process
    per server: only the one measured is busy), warmed up; all stopped after."""
    sides: list[Side] = []
    try:
        for kind in kinds:
            server = Server(kind, client_buffer=plan.client_buffer)
            sides.append(Side(kind, server, Workers(plan.workers), Publisher(server.port)))
            await server.start()
            await sides[-1].workers.start()
        for side in sides:
            conn = await side.workers.connect(ws_url(side.server), n)
            side.subscribers = conn["ok"]
            await warm_up(side.pub, side.workers, plan.fanout_pad)
        yield sides
    finally:
        for side in sides:
            side.pub.close()
        for side in sides:
            SETUP_NOTES[f"{side.kind}_stop"] = await asyncio.to_thread(side.server.stop)
        for side in sides:
            await side.workers.stop()


Measure = Callable[[Side], Awaitable[dict[str, Any]]]


async def paired(
    kinds: tuple[str, ...], plan: Plan, n: int, rounds: int, measure: Measure, label: str
) -> dict[str, list[dict[str, Any]]]:
    """A B A B ... on servers that stay up: each round measures every server once, in turn,
    on the same subscribers. A measurement that someone else's work disturbed (the machine is
    shared) is made again once, and the less disturbed of the two kept."""
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    SETUP_NOTES.clear()
    async with paired_setup(kinds, plan, n) as sides:
        for r in range(rounds):
            for side in sides:
                result = await _measure_once(side, measure, label, r)
                if disturbed(result):
                    again = await _measure_once(side, measure, label + " (again: disturbed)", r)
                    result = less_disturbed(result, again)
                out[side.kind].append(result)
    for kind, runs in out.items():  # how each server took SIGTERM, on its last run
        if runs and f"{kind}_stop" in SETUP_NOTES:
            runs[-1].update(SETUP_NOTES[f"{kind}_stop"])
    return out


async def _measure_once(side: Side, measure: Measure, label: str, r: int) -> dict[str, Any]:
    quiet = await wait_for_quiet()
    t = time.time()
    await side.workers.all("reset")
    try:
        result = await measure(side)
    except Exception as exc:  # one failed measurement is reported, the bench goes on
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result.update(quiet, round=r + 1, wall_s=round(time.time() - t, 1))
    result["subscribers"] = side.subscribers
    print(f"  {label} {side.kind} round {r + 1}: {brief(result)}", file=sys.stderr, flush=True)
    return result


async def fanout_burst(side: Side, plan: Plan, events: int) -> dict[str, Any]:
    """`events` POSTs back to back; deliveries per second from the first POST to the last
    receipt."""
    meter = Meter(side.server, side.workers)
    await meter.start()
    log = await side.pub.back_to_back(events, plan.fanout_pad, 1, within=60)
    replies = await side.workers.wait(log.sent, within=120, idle=10)
    last = max(r["last_at"] for r in replies)
    seconds = max(1e-6, last - log.first_sent_at)
    cpu = meter.stop(replies, seconds)
    d = delivery_stats(replies)
    return {
        "events": events,
        "expected": side.subscribers * log.sent,
        **d,
        "seconds": round(seconds, 3),
        "deliveries_per_s": round(d["deliveries"] / seconds),
        "deliveries_per_cpu_s": round(d["deliveries"] / cpu["server_cpu_s"])
        if cpu["server_cpu_s"]
        else None,
        **cpu,
        "post_p50_ms": log.summary()["post_p50_ms"],
        "post": log.summary(),
    }


async def latency_window(side: Side, plan: Plan, rate: int) -> dict[str, Any]:
    """`rate` events a second for `plan.latency_seconds`, open loop."""
    count = int(rate * plan.latency_seconds)
    meter = Meter(side.server, side.workers)
    await meter.start()
    log = await side.pub.open_loop(rate, count, plan.fanout_pad, 1, within=10)
    replies = await side.workers.wait(log.sent, within=60, idle=10)
    last = max(r["last_at"] for r in replies)
    cpu = meter.stop(replies, max(1e-6, last - log.first_sent_at))
    d = delivery_stats(replies)
    return {
        "rate": rate,
        "events": count,
        "expected": side.subscribers * log.sent,
        **d,
        **cpu,
        "post": log.summary(),
        "events_not_sent": log.not_sent,
    }


async def run_memory(kind: str, plan: Plan) -> dict[str, Any]:
    async with bench_setup(kind, plan) as (server, workers, pub):
        url = ws_url(server)
        warm = (await workers.connect(url, plan.workers))["ok"]
        await warm_up(pub, workers, plan.fanout_pad)
        await asyncio.sleep(1.0)
        rss0 = server.rss_kb()
        conn = await workers.connect(url, plan.memory_n - warm)
        await asyncio.sleep(3.0)
        rss1 = server.rss_kb()
        stats = await workers.all("stats")
        n = sum(r["open"] for r in stats) - warm
        return {
            "subscribers": n + warm,
            "connect_failed": conn["failed"],
            "rss_before_mb": round(rss0 / 1024, 1),
            "rss_after_mb": round(rss1 / 1024, 1),
            "kb_per_connection": round((rss1 - rss0) / n, 2) if n > 0 else None,
            "load_rss_mb": round(sum(r["rss_kb"] for r in stats) / 1024, 1),
        }


async def run_connect(kind: str, plan: Plan) -> dict[str, Any]:
    async with bench_setup(kind, plan) as (server, workers, pub):
        del pub
        url = ws_url(server)
        await workers.connect(url, plan.workers)
        meter = Meter(server, workers)
        await meter.start()
        conn = await workers.connect(url, plan.connect_n, batch=plan.connect_n, concurrency=64)
        stats = await workers.all("stats")
        cpu = meter.stop(stats, conn["seconds"])
        await asyncio.sleep(1.0)
        stats = await workers.all("stats")
        return {
            "attempted": plan.connect_n,
            "accepted": conn["ok"],
            "failed": conn["failed"],
            "errors": conn["errors"],
            "seconds": round(conn["seconds"], 3),
            "accepted_per_s": round(conn["ok"] / conn["seconds"]),
            "open_after_1s": sum(r["open"] for r in stats) - plan.workers,
            "server_closes": merge_closes(stats),
            **cpu,
        }
