"""The full scenario: as many idle subscribers as one server process may hold here.

Descriptors are capped at 20,000 per process on these machines (the hard limit), so the
service holds 19,000 subscribers; they come from 127.0.0.2, 127.0.0.3, ... (bound before
connect), 5,000 to an address, so the client's ephemeral ports never run out. The fan-out is
measured first at 10,000 on the same server and load processes, then at 19,000: the ratio
of the two is the scenario's figure. The service only (the seed design is not run here).
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from bench.measure import SETUP_NOTES, Plan, wait_for_quiet, warm_up, ws_url
from bench.procs import Server, Workers, source_addresses
from bench.publisher import Publisher
from bench.scenarios import Side, _measure_once, fanout_burst


async def run_full(plan: Plan) -> dict[str, list[dict[str, Any]]]:
    """Runs keyed by variant: `N=<ref>` and `N=<full>`, each a list of measurements."""
    SETUP_NOTES.clear()
    SETUP_NOTES.update(await wait_for_quiet())
    server = Server("service", client_buffer=plan.client_buffer, name="service-full")
    await server.start()
    workers = Workers(plan.full_workers)
    pub = Publisher(server.port)
    sources = source_addresses(plan.full_n)
    burst = functools.partial(fanout_burst, plan=plan, events=plan.full_events)
    out: dict[str, list[dict[str, Any]]] = {}
    try:
        await workers.start()
        url = ws_url(server)
        warm = (await workers.connect(url, plan.full_workers, sources=sources))["ok"]
        await warm_up(pub, workers, plan.fanout_pad)
        await asyncio.sleep(1.0)
        rss0 = server.rss_kb()
        side = Side("service", server, workers, pub)
        t = time.time()
        conn = await workers.connect(url, plan.full_ref_n - warm, sources=sources)
        side.subscribers = warm + conn["ok"]
        ref_label = f"N={plan.full_ref_n}"
        out[ref_label] = [
            await _measure_once(side, burst, f"full {ref_label}", r)
            for r in range(plan.full_rounds)
        ]
        more = await workers.connect(url, plan.full_n - plan.full_ref_n, sources=sources)
        connect_s = time.time() - t
        await asyncio.sleep(3.0)  # as the memory scenario: RSS settles after the last connect
        rss1 = server.rss_kb()
        stats = await workers.all("stats")
        n = sum(r["open"] for r in stats)
        side.subscribers = n
        memory = {
            "connected": n,
            "connect_failed": conn["failed"] + more["failed"],
            "connect_errors": {**conn["errors"], **more["errors"]},
            "connect_s": round(connect_s, 1),
            "rss_before_mb": round(rss0 / 1024, 1),
            "rss_after_mb": round(rss1 / 1024, 1),
            "kb_per_connection": round((rss1 - rss0) / (n - warm), 2) if n > warm else None,
            "load_rss_mb": round(sum(r["rss_kb"] for r in stats) / 1024, 1),
            "source_addresses": sources,
        }
        full_label = f"N={plan.full_n}"
        runs = [
            await _measure_once(side, burst, f"full {full_label}", r)
            for r in range(plan.full_rounds)
        ]
        for run in runs:
            run.update(memory)
            run["every_subscriber_every_event"] = (
                run.get("complete_subscribers") == n and run.get("deliveries") == run["expected"]
            )
        out[full_label] = runs
    finally:
        pub.close()
        SETUP_NOTES.update(await asyncio.to_thread(server.stop))
        await workers.stop()
    return out
