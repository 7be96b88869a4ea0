"""The redis scenario: fan-out with the service on a real redis-server against the embedded
broker, A B A B on servers that stay up; then two instances on one Redis, a core each.

redis-server is started by the bench on a free port (`--save "" --appendonly no`) and runs
on the server core beside the instance under test: it is server-side work. Two instances:
instance 1 on core 0 with its subscribers' load process on core 1, instance 2 on core 1
with its load on core 0; the events are POSTed to instance 1 and both deliver them.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from typing import Any

from bench.measure import SETUP_NOTES, Plan, my_cpu, wait_for_quiet, warm_up, ws_url
from bench.procs import LOAD_CORE, SERVER_CORE, RedisServer, Server, Workers, combined
from bench.publisher import Publisher
from bench.report import brief
from bench.scenarios import Side, _measure_once, fanout_burst


async def run_redis_pair(plan: Plan) -> dict[str, list[dict[str, Any]]]:
    """Embedded and Redis side by side, `n` subscribers each, A B A B."""
    SETUP_NOTES.clear()
    redis = RedisServer(SERVER_CORE)
    await redis.start()
    sides: list[Side] = []
    out: dict[str, list[dict[str, Any]]] = {"redis": [], "memory": []}
    burst = functools.partial(fanout_burst, plan=plan, events=plan.redis_events)
    try:
        for name, env in (("redis", {"WSB_BROKER_URL": redis.url}), ("memory", {})):
            server = Server(
                "service", client_buffer=plan.client_buffer, env=env, name=f"service-{name}"
            )
            sides.append(Side(name, server, Workers(plan.workers), Publisher(server.port)))
            await server.start()
            await sides[-1].workers.start()
        for side in sides:
            conn = await side.workers.connect(ws_url(side.server), plan.redis_n)
            side.subscribers = conn["ok"]
            await warm_up(side.pub, side.workers, plan.fanout_pad)
        for r in range(plan.fanout_rounds):
            for side in sides:
                r0 = redis.cpu()
                result = await _measure_once(side, burst, f"redis N={plan.redis_n}", r)
                if side.kind == "redis":
                    result["redis_cpu_s"] = round(redis.cpu() - r0, 3)
                out[side.kind].append(result)
    finally:
        for side in sides:
            side.pub.close()
            SETUP_NOTES[f"{side.kind}_stop"] = await asyncio.to_thread(side.server.stop)
            await side.workers.stop()
        redis.stop()
    return out


class _Both:
    """Two servers' CPU seen as one (for the Meter in fanout_burst)."""

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers

    def cpu(self) -> float:
        return sum(s.cpu() for s in self.servers)

    def cpu_split(self) -> tuple[float, float]:
        splits = [s.cpu_split() for s in self.servers]
        return sum(u for u, _ in splits), sum(k for _, k in splits)


async def run_redis_two(plan: Plan) -> list[dict[str, Any]]:
    """Two instances on one Redis, a core each, `n / 2` subscribers on each; POSTs to the
    first: total deliveries per second and per server-CPU-second (both instances)."""
    SETUP_NOTES.clear()
    redis = RedisServer(SERVER_CORE)
    await redis.start()
    env = {"WSB_BROKER_URL": redis.url}
    servers = [
        Server("service", client_buffer=plan.client_buffer, env=env, core=core, name=f"two-{i}")
        for i, core in ((1, SERVER_CORE), (2, LOAD_CORE))
    ]
    loads = [Workers(1, LOAD_CORE), Workers(1, SERVER_CORE)]  # each on the other core
    pub = Publisher(servers[0].port)
    runs: list[dict[str, Any]] = []
    try:
        for server, load in zip(servers, loads, strict=True):
            await server.start()
            await load.start()
        ok = 0
        for server, load in zip(servers, loads, strict=True):
            ok += (await load.connect(ws_url(server), plan.redis_n // 2))["ok"]
        both = combined(*loads)
        await warm_up(pub, both, plan.fanout_pad)
        side = Side("two", _Both(servers), both, pub, subscribers=ok)  # type: ignore[arg-type]
        for r in range(plan.fanout_rounds):
            quiet = await wait_for_quiet()
            t = time.time()
            await both.all("reset")
            r0, m0 = redis.cpu(), my_cpu()
            try:
                result = await fanout_burst(side, plan, plan.redis_events)
            except Exception as exc:  # one failed measurement is reported, the bench goes on
                result = {"error": f"{type(exc).__name__}: {exc}"}
            per = await asyncio.gather(*(lw.all("stats") for lw in loads))
            result["per_instance_deliveries"] = [sum(x["received"] for x in p) for p in per]
            result["redis_cpu_s"] = round(redis.cpu() - r0, 3)
            result["orchestrator_cpu_s"] = round(my_cpu() - m0, 3)
            result.update(quiet, round=r + 1, wall_s=round(time.time() - t, 1), subscribers=ok)
            # Both cores run servers here: the "other" shares are not someone else's work.
            for k in ("other_util_core0", "other_util_core1"):
                result.pop(k, None)
            print(
                f"  redis two instances round {r + 1}: {brief(result)}", file=sys.stderr, flush=True
            )
            runs.append(result)
    finally:
        pub.close()
        for server in servers:
            await asyncio.to_thread(server.stop)
        for load in loads:
            await load.stop()
        redis.stop()
    return runs
