"""What the benchmark measures with: its plan (sizes), CPU and RSS meters, latency percentiles,
and a fresh server plus load generators for each measurement."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.procs import CLK_TCK, LOAD_CORE, SERVER_CORE, Server, Workers, latencies_ms
from bench.publisher import Publisher


@dataclass
class Plan:
    """How big each scenario is; `quick()` is the small one for iterating."""

    mode: str = "full"
    workers: int = 1  # one process: see README, "One load process"
    fanout: list[tuple[int, int]] = field(
        default_factory=lambda: [(1000, 200), (5000, 40), (10000, 30)]
    )  # (subscribers, events): 200k-300k deliveries each, fewer events than a client buffer
    fanout_rounds: int = 3
    fanout_pad: int = 64  # message bytes: frames of about 200 bytes
    latency_n: int = 1000
    latency_rates: list[int] = field(default_factory=lambda: [20, 50])
    latency_seconds: float = 10.0
    latency_rounds: int = 2
    slow_healthy: int = 1000
    slow_n: int = 20
    slow_events: int = 2000
    slow_rate: float = 20.0
    slow_pad: int = 900  # frames of about 1 KB
    slow_rcvbuf: int = 4096  # the kernel doubles it
    slow_mss: int = 1460  # as on Ethernet; see slowclient.open_slow
    slow_give_up: int = 100  # POSTs hung (no answer in 5 s) before posting stops
    slow_control: bool = True  # the same run without the slow ones, for the p99 reference
    client_buffer: int = 256  # the service's default WSB_CLIENT_BUFFER
    memory_n: int = 10000
    connect_n: int = 5000
    connect_rounds: int = 2
    # full: as many idle subscribers as one process may hold (20,000 descriptors here)
    full_n: int = 19000
    full_ref_n: int = 10000  # the fan-out reference, on the same server, before the rest
    full_events: int = 10
    full_rounds: int = 2
    full_workers: int = 2  # each load process under its own descriptor limit
    # storm: subscribers behind drop at once and come back with `since`
    storm_n: int = 10000
    storm_steady: int = 1000  # connected all along: their latency during the storm
    storm_behind: int = 100
    storm_rate: float = 2.0  # live events/s: 22,000 deliveries/s to every subscriber
    storm_quiet_s: float = 10.0
    storm_live_s: float = 15.0
    storm_concurrency: int = 10000  # handshakes in flight: all at once
    # redis: fan-out on a real redis-server against the embedded broker
    redis_n: int = 10000
    redis_events: int = 30
    # publish: POST throughput with subscribers attached
    publish_filtered: int = 1000  # subscribed to another type: each event checked, not sent
    publish_batches: int = 60  # of 500 events
    publish_batch: int = 500
    publish_singles: int = 10000
    publish_conns: int = 2  # keep-alive connections posting batches back to back, side by side
    publish_single_conns: int = 8  # and single events: more, so no one waits on a wake-up
    readers_n: int = 10000  # subscribers, each on one of 100 posts (bench/readers.py)
    readers_events: int = 60  # deliveries to each subscriber per measurement
    readers_rounds: int = 3
    readers_requests: int = 200  # GET /readers of each kind

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            mode="quick",
            fanout=[(1000, 60), (5000, 12)],
            fanout_rounds=2,
            latency_seconds=5.0,
            latency_rounds=1,
            slow_healthy=200,
            slow_n=5,
            slow_events=400,
            memory_n=2000,
            connect_n=2000,
            connect_rounds=1,
            full_n=4000,
            full_ref_n=2000,
            full_rounds=1,
            storm_n=2000,
            storm_steady=200,
            storm_quiet_s=5.0,
            storm_live_s=8.0,
            redis_n=2000,
            publish_filtered=200,
            publish_batches=20,
            publish_singles=3000,
            readers_n=2000,
            readers_rounds=2,
        )


# ---------------------------------------------------------------- measuring helpers


def my_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) of sorted values, nearest rank."""
    if not values:
        return None
    k = min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))
    return round(values[k], 2)


def merge_closes(replies: Iterable[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in replies:
        for code, n in r.get("closes", {}).items():
            out[code] = out.get(code, 0) + n
    return out


def delivery_stats(replies: list[dict[str, Any]]) -> dict[str, Any]:
    lat = latencies_ms(replies)
    return {
        "deliveries": sum(r["received"] for r in replies),
        "lat_p50_ms": pct(lat, 50),
        "lat_p99_ms": pct(lat, 99),
        "lat_max_ms": round(lat[-1], 2) if lat else None,
        "complete_subscribers": sum(r["complete"] for r in replies),
        "open_subscribers": sum(r["open"] for r in replies),
        "server_closes": merge_closes(replies),
    }


def core_busy() -> dict[str, float]:
    """CPU seconds of each core so far, from /proc/stat: busy (user, nice, system, irq,
    softirq), and stolen by the hypervisor (time this VM wanted and did not get)."""
    out: dict[str, float] = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *v = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks = [int(x) for x in v]
                out[name] = (sum(ticks[:3]) + ticks[5] + ticks[6]) / CLK_TCK
                out[name + "_steal"] = ticks[7] / CLK_TCK if len(ticks) > 7 else 0.0
    return out


class Meter:
    """Server CPU, load CPU (workers + this process) and wall time between two points, and how
    busy each core was with anything else (other people's work on a shared machine)."""

    def __init__(self, server: Server, workers: Workers) -> None:
        self.server, self.workers = server, workers

    async def start(self) -> None:
        replies = await self.workers.all("stats")
        self.w0 = sum(r["cpu"] for r in replies)
        self.s0, self.m0, self.t0 = self.server.cpu(), my_cpu(), time.time()
        self.sys0 = self.server.cpu_split()[1]
        self.c0 = core_busy()

    def stop(self, replies: list[dict[str, Any]], seconds: float | None = None) -> dict[str, Any]:
        s1, m1, t1, c1 = self.server.cpu(), my_cpu(), time.time(), core_busy()
        wall = seconds if seconds else t1 - self.t0
        span = t1 - self.t0
        server_cpu = s1 - self.s0
        load_cpu = sum(r["cpu"] for r in replies) - self.w0 + (m1 - self.m0)
        core = {k: c1[k] - self.c0.get(k, 0.0) for k in c1}
        return {
            "server_cpu_s": round(server_cpu, 3),
            "server_sys_share": round((self.server.cpu_split()[1] - self.sys0) / server_cpu, 3)
            if server_cpu
            else None,
            "server_cpu_util": round(server_cpu / wall, 3) if wall else None,
            "load_cpu_s": round(load_cpu, 3),
            "load_cpu_util": round(load_cpu / wall, 3) if wall else None,
            # Busy time of each core that was not ours (over the whole span measured).
            "other_util_core0": round(
                max(0.0, core.get(f"cpu{SERVER_CORE}", 0) - server_cpu) / span, 3
            ),
            "other_util_core1": round(
                max(0.0, core.get(f"cpu{LOAD_CORE}", 0) - load_cpu) / span, 3
            ),
            "steal_util_core0": round(core.get(f"cpu{SERVER_CORE}_steal", 0) / span, 3),
            "steal_util_core1": round(core.get(f"cpu{LOAD_CORE}_steal", 0) / span, 3),
        }


# Someone else's work took a real share of a core during a run (the machine is shared).
DISTURBED = {"other_util_core0": 0.10, "other_util_core1": 0.15, "steal_util_core0": 0.10}


RETRIES = {"left": 8}  # re-measurements allowed in one bench run, so a busy machine cannot
# stretch it without end


def disturbed(result: dict[str, Any]) -> bool:
    """Someone else took more than its limit of a core during the measurement; spends one of
    the run's retries when it says so."""
    if not any((result.get(k) or 0) > limit for k, limit in DISTURBED.items()):
        return False
    if RETRIES["left"] <= 0:
        return False
    RETRIES["left"] -= 1
    return True


def less_disturbed(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Of a measurement and its repeat, the one others disturbed less; the other is kept in it
    under `disturbed_run`."""

    def load(r: dict[str, Any]) -> float:
        return max((r.get(k) or 0) / limit for k, limit in DISTURBED.items())

    kept, other = (a, b) if load(a) <= load(b) else (b, a)
    kept["disturbed_run"] = other
    return kept


# What the last bench_setup saw of the machine before it started (merged into each run's result).
SETUP_NOTES: dict[str, Any] = {}


async def wait_for_quiet(limit: float = 0.15, within: float = 20.0) -> dict[str, Any]:
    """Wait (up to `within` s) for a second in which neither core is busier than `limit`: the
    machine is shared, and a run started under someone else's test suite measures that too."""
    start = time.monotonic()
    busiest = 1.0
    while time.monotonic() - start < within:
        c0, t0 = core_busy(), time.monotonic()
        await asyncio.sleep(1.0)
        c1, dt = core_busy(), time.monotonic() - t0
        busiest = max((c1[k] - c0[k]) / dt for k in (f"cpu{SERVER_CORE}", f"cpu{LOAD_CORE}"))
        if busiest <= limit:
            break
    return {"quiet_wait_s": round(time.monotonic() - start, 1), "busy_before": round(busiest, 2)}


@contextlib.asynccontextmanager
async def bench_setup(kind: str, plan: Plan) -> AsyncIterator[tuple[Server, Workers, Publisher]]:
    """A fresh server and fresh load generators for one measurement; all stopped after."""
    SETUP_NOTES.clear()
    SETUP_NOTES.update(await wait_for_quiet())
    server = Server(kind, client_buffer=plan.client_buffer)
    await server.start()
    workers = Workers(plan.workers)
    pub = Publisher(server.port)
    try:
        await workers.start()
        yield server, workers, pub
    finally:
        pub.close()
        # The server closes first (no client TIME_WAITs); how it took SIGTERM is noted.
        SETUP_NOTES.update(await asyncio.to_thread(server.stop))
        await workers.stop()


def ws_url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}/ws"


async def warm_up(pub: Publisher, workers: Workers, pad: int) -> None:
    """One event through every subscriber, so lazily built state exists before measuring."""
    await pub.back_to_back(1, pad, 0, within=30)
    await workers.wait(1, within=30, idle=10)
    await workers.all("reset")
