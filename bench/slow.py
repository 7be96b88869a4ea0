"""The slow-subscriber scenario: healthy subscribers, and never-reading ones spread among them.

What happens to the slow ones is watched from outside by slowclient.py (socket queues and TCP
states on both ends); posting is open loop, and a POST with no answer in 5 s counts as hung.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from typing import Any

from bench.measure import Meter, Plan, bench_setup, delivery_stats, warm_up, ws_url
from bench.procs import Child, Server, Workers
from bench.publisher import PostLog, Publisher

SAMPLE_S = 0.2  # how often the slow clients sample their sockets and the server's


async def run_slow(kind: str, plan: Plan, with_slow: bool) -> dict[str, Any]:
    """Healthy subscribers, with or without never-reading ones spread among them."""
    async with bench_setup(kind, plan) as (server, workers, pub):
        slow = Child("slowclient.py") if with_slow else None
        try:
            if slow is not None:
                await slow.start()
            return await _slow_body(server, workers, pub, slow, plan)
        finally:
            if slow is not None:
                await slow.stop()


async def _slow_body(
    server: Server, workers: Workers, pub: Publisher, slow: Child | None, plan: Plan
) -> dict[str, Any]:
    url = ws_url(server)
    # Slow ones among the healthy (a slow one at the end of the seed's list would hide its stall).
    healthy = 0
    slow_connect: dict[str, Any] = {}
    chunks = [plan.slow_healthy // plan.slow_n] * plan.slow_n
    chunks[-1] += plan.slow_healthy - sum(chunks)
    for i, k in enumerate(chunks):
        healthy += (await workers.connect_one(i, url, k))["ok"]
        if slow is not None:
            slow_connect = await slow.call(
                "connect", port=server.port, n=1, rcvbuf=plan.slow_rcvbuf, mss=plan.slow_mss
            )
    await warm_up(pub, workers, plan.slow_pad)
    await asyncio.sleep(1.0)
    rss0 = server.rss_kb()
    meter = Meter(server, workers)
    await meter.start()
    if slow is not None:
        await slow.call("watch", interval=SAMPLE_S)
    stop = asyncio.Event()
    log = PostLog()
    timeline: list[dict[str, Any]] = []
    t0 = time.time()

    async def sample() -> None:
        """RSS every 0.5 s, deliveries every 2 s; stop posting to a server whose POSTs hang."""
        k = 0
        while not stop.is_set():
            row: dict[str, Any] = {
                "t": round(time.time() - t0, 1),
                "rss_kb": server.rss_kb(),
                "posts_hung": log.hung + log.not_sent,
            }
            if k % 4 == 0:
                row["received"] = sum(r["received"] for r in await workers.all("stats"))
            if log.hung + log.not_sent >= plan.slow_give_up:
                row["gave_up"] = f"{plan.slow_give_up} POSTs hung: posting stopped"
                timeline.append(row)
                stop.set()
                return
            timeline.append(row)
            k += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    sampler = asyncio.create_task(sample())
    await pub.open_loop(
        plan.slow_rate, plan.slow_events, plan.slow_pad, 1, within=5, stop=stop, log=log
    )
    gave_up = stop.is_set()
    posted_for = time.time() - t0
    replies = await workers.wait(log.sent, within=5 if gave_up else 30, idle=5)
    stop.set()
    await sampler
    cpu = meter.stop(replies)
    rss_end = server.rss_kb()
    rss_max = max([rss_end, *(r["rss_kb"] for r in timeline)])
    d = delivery_stats(replies)
    expected = healthy * log.sent
    out: dict[str, Any] = {
        "healthy": healthy,
        "slow": plan.slow_n if slow is not None else 0,
        "events_planned": plan.slow_events,
        "events_posted": log.sent,
        "gave_up": timeline[-1].get("gave_up") if gave_up else None,
        "posting_seconds": round(posted_for, 1),
        "expected": expected,
        **d,
        "healthy_share": round(d["deliveries"] / expected, 4) if expected else None,
        "rss_start_mb": round(rss0 / 1024, 1),
        "rss_max_mb": round(rss_max / 1024, 1),
        "rss_growth_mb": round((rss_max - rss0) / 1024, 1),
        "posts_hung": log.hung + log.not_sent,
        "post": log.summary(),
        **cpu,
    }
    if slow is not None:
        report = await slow.call("report", drain=True, drain_budget=2.0)
        out["slow_rcvbuf"] = slow_connect.get("effective_rcvbuf")
        out["slow_detail"] = [_slow_row(r, t0) for r in report["slow"]]
        out["slow_summary"] = _slow_summary(out["slow_detail"])
    out["server_metrics"] = await scrape_metrics(pub)
    out["timeline"] = timeline[:: max(1, len(timeline) // 60)]
    return out


async def scrape_metrics(pub: Publisher) -> list[str]:
    """The service's own count of closes by code, and its connections (the seed has none)."""
    try:
        status, body = await pub.get("/metrics")
    except (OSError, TimeoutError):
        return []
    if status != 200:
        return []
    wanted = ("wsb_disconnects_total", "wsb_connections")
    return [ln for ln in body.decode(errors="replace").splitlines() if ln.startswith(wanted)]


def _slow_row(r: dict[str, Any], t0: float) -> dict[str, Any]:
    def rel(t: float | None) -> float | None:
        return round(t - t0, 2) if t is not None else None

    full, released = rel(r["t_buffers_full"]), rel(r["t_released"])
    return {
        "t_buffers_full": full,
        "t_released": released,
        "release_after_full_s": round(released - full, 2)
        if full is not None and released is not None
        else None,
        "released": r["released"],
        "close_code": r["close_code"],
        "read_end": r["read_end"],
        "events_received": r["events_received"],
        "client_rcvq_max": r["client_rcvq_max"],
        "server_sendq_max": r["server_sendq_max"],
    }


def _slow_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    delays = [r["release_after_full_s"] for r in rows if r["release_after_full_s"] is not None]
    return {
        "released": len(delays),
        "of": len(rows),
        "how": sorted({r["released"] or "never" for r in rows}),
        "close_codes_seen": sorted({str(r["close_code"]) for r in rows}),
        "release_after_full_s_median": round(statistics.median(delays), 2) if delays else None,
        "release_after_full_s_max": round(max(delays), 2) if delays else None,
        # Strict: from the moment the socket buffers were seen full, give or take one sample.
        "within_5s_of_buffer_full": bool(delays)
        and len(delays) == len(rows)
        and max(delays) <= 5.0 + SAMPLE_S,
    }
