"""wsbroadcast's benchmark: the service against the seed's design, A B A B, ratios from one run.

    python -m bench [--quick] [--scenario NAME ...] [--only service|baseline]
    python bench/run.py ...

Each scenario prints one JSON line and a table; everything lands in bench/results/latest.json.
The server runs on core 0, the load generators and this process on core 1 (`taskset`).
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import uvloop

if __package__ in (None, ""):  # run as a script: python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.baseline import uvicorn_options
from bench.brokers import run_redis_pair, run_redis_two
from bench.capacity import run_full
from bench.measure import SETUP_NOTES, Plan, disturbed, less_disturbed
from bench.outbox import run_outbox
from bench.procs import (
    HERE,
    pin_self_to_load_core,
    raise_nofile,
    service_available,
)
from bench.publishing import run_publish
from bench.readers import run_readers
from bench.report import brief, emit, machine, median_of, targets, targets_table, variant
from bench.scenarios import fanout_burst, latency_window, paired, run_connect, run_memory
from bench.slow import run_slow
from bench.storm import run_storm

KINDS = ("service", "baseline")
SCENARIOS = (
    "fanout",
    "latency",
    "slow",
    "memory",
    "connect",
    "outbox",
    "readers",
    "full",
    "storm",
    "redis",
    "publish",
)
# About two minutes each and 20,000 connections or more: with them `make bench` passes 20
# minutes, so they run with --long (or by name).
LONG = ("full", "storm")
FANOUT_KEYS = [
    "deliveries_per_s",
    "deliveries_per_cpu_s",
    "server_sys_share",
    "post_p50_ms",
    "lat_p50_ms",
    "lat_p99_ms",
    "server_cpu_util",
    "load_cpu_util",
]


# ---------------------------------------------------------------- A B A B and the report


Runner = Callable[[str], Any]


async def alternate(
    kinds: tuple[str, ...], rounds: int, runner: Runner, label: str, retry: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """A B A B ...: each round runs every kind once, in the same order. A run that someone
    else's work disturbed is run again once, and the less disturbed of the two kept."""
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for r in range(rounds):
        for kind in kinds:
            result = await one_run(runner, kind, label, r)
            if retry and disturbed(result):
                again = await one_run(runner, kind, label + " (again: disturbed)", r)
                result = less_disturbed(result, again)
            out[kind].append(result)
    return out


async def one_run(runner: Runner, kind: str, label: str, r: int) -> dict[str, Any]:
    t = time.time()
    try:
        result: dict[str, Any] = await runner(kind)
    except Exception as exc:  # one failed run is reported, the bench goes on
        result = {"error": f"{type(exc).__name__}: {exc}"}
    result.update(SETUP_NOTES)
    result["round"] = r + 1
    result["wall_s"] = round(time.time() - t, 1)
    print(f"  {label} {kind} round {r + 1}: {brief(result)}", file=sys.stderr, flush=True)
    return result


async def scenario_fanout(kinds: tuple[str, ...], plan: Plan) -> dict[str, Any]:
    keys = FANOUT_KEYS
    variants = []
    for n, events in plan.fanout:
        burst = functools.partial(fanout_burst, plan=plan, events=events)
        runs = await paired(kinds, plan, n, plan.fanout_rounds, burst, f"fanout N={n}")
        variants.append(variant(f"N={n}", runs, keys))
    return emit("fanout", plan, variants, keys)


async def scenario_latency(kinds: tuple[str, ...], plan: Plan) -> dict[str, Any]:
    keys = ["lat_p50_ms", "lat_p99_ms", "lat_max_ms", "server_cpu_util", "load_cpu_util"]
    variants = []
    for rate in plan.latency_rates:
        window = functools.partial(latency_window, plan=plan, rate=rate)
        runs = await paired(kinds, plan, plan.latency_n, plan.latency_rounds, window, f"{rate}/s")
        variants.append(variant(f"{rate}/s", runs, keys))
    return emit("latency", plan, variants, keys)


async def scenario_slow(kinds: tuple[str, ...], plan: Plan) -> dict[str, Any]:
    keys = [
        "healthy_share",
        "lat_p50_ms",
        "lat_p99_ms",
        "rss_growth_mb",
        "posts_hung",
        "server_cpu_util",
    ]
    variants = [
        variant(
            "with slow",
            await alternate(kinds, 1, lambda k: run_slow(k, plan, True), "slow", retry=False),
            keys,
        )
    ]
    if plan.slow_control:
        runs = await alternate(
            kinds, 1, lambda k: run_slow(k, plan, False), "slow control", retry=False
        )
        variants.append(variant("no slow", runs, keys))
    return emit("slow", plan, variants, keys)


async def scenario_memory(kinds: tuple[str, ...], plan: Plan) -> dict[str, Any]:
    keys = ["kb_per_connection", "rss_before_mb", "rss_after_mb"]
    runs = await alternate(kinds, 1, lambda k: run_memory(k, plan), "memory")
    return emit("memory", plan, [variant(f"N={plan.memory_n}", runs, keys)], keys)


async def scenario_connect(kinds: tuple[str, ...], plan: Plan) -> dict[str, Any]:
    keys = ["accepted_per_s", "server_cpu_util", "load_cpu_util"]
    runs = await alternate(kinds, plan.connect_rounds, lambda k: run_connect(k, plan), "connect")
    return emit("connect", plan, [variant(f"N={plan.connect_n}", runs, keys)], keys)


async def scenario_outbox(kinds: tuple[str, ...], plan: Plan) -> dict[str, Any]:
    """Commit to delivery through the Postgres outbox (bench/outbox.py); the service only."""
    keys = ["lag_p50_ms", "lag_p99_ms", "lag_max_ms", "rows_per_s"]
    variants = []
    if "service" in kinds:
        for label, rate in (("at rest", None), ("1000/s", 1000)):
            runs = await alternate(
                ("service",),
                plan.latency_rounds,
                lambda k, r=rate: run_outbox(plan, r),
                f"outbox {label}",
            )
            variants.append(variant(label, runs, keys))
    return emit("outbox", plan, variants, keys)


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 3) if isinstance(a, int | float) and b else None


async def scenario_full(kinds: tuple[str, ...], plan: Plan) -> dict[str, Any]:
    """19,000 idle subscribers in one process, then events to all; the service only."""
    keys = [*FANOUT_KEYS, "complete_subscribers", "kb_per_connection", "rss_after_mb"]
    variants, figures = [], {}
    if "service" in kinds:
        runs = await run_full(plan)
        variants = [variant(name, {"service": rs}, keys) for name, rs in runs.items()]
        ref, full = (v["median"]["service"] for v in variants)
        figures = {
            "full_vs_ref_deliveries_per_s": _ratio(
                full["deliveries_per_s"], ref["deliveries_per_s"]
            ),
            "full_vs_ref_deliveries_per_cpu_s": _ratio(
                full["deliveries_per_cpu_s"], ref["deliveries_per_cpu_s"]
            ),
        }
    return emit("full", plan, variants, keys, figures)


async def scenario_storm(kinds: tuple[str, ...], plan: Plan) -> dict[str, Any]:
    """A reconnect storm with `since`; the service only (the seed has no resume)."""
    keys = [
        "all_resumed_s",
        "resumed_s_p50",
        "connected_s_max",
        "missed",
        "duplicated",
        "exact",
        "quiet_lat_p99_ms",
        "storm_lat_p99_ms",
        "p99_vs_quiet",
        "server_cpu_util",
        "load_cpu_util",
    ]
    variants = []
    if "service" in kinds:

        async def storm(kind: str) -> dict[str, Any]:
            return await run_storm(plan)

        runs = await alternate(("service",), 1, storm, "storm", retry=False)
        variants = [variant(f"N={plan.storm_n}", runs, keys)]
    return emit("storm", plan, variants, keys)


async def scenario_redis(kinds: tuple[str, ...], plan: Plan) -> dict[str, Any]:
    """Fan-out on a real Redis against the embedded broker, then two instances on one Redis."""
    keys = [*FANOUT_KEYS, "redis_cpu_s"]
    variants = []
    if "service" in kinds:
        pair = await run_redis_pair(plan)
        variants.append(variant(f"N={plan.redis_n}", pair, keys, pair=("redis", "memory")))
        two = await run_redis_two(plan)
        variants.append(variant("two instances", {"redis": two}, keys, pair=("redis", "memory")))
    return emit("redis", plan, variants, keys)


async def scenario_publish(kinds: tuple[str, ...], plan: Plan) -> dict[str, Any]:
    """POSTs/s and events/s with subscribers attached; the service only."""
    keys = [
        "events_per_s",
        "delivered_events_per_s",
        "requests_per_s",
        "answered_per_s",
        "every_event_delivered",
        "server_cpu_util",
        "load_cpu_util",
    ]
    variants = []
    if "service" in kinds:
        result = await run_publish(plan)
        variants = [variant(name, {"service": [r]}, keys) for name, r in result.items()]
    return emit("publish", plan, variants, keys)


async def scenario_readers(kinds: tuple[str, ...], plan: Plan) -> dict[str, Any]:
    """The service only (the seed design has no post_id): ratios are against the run with
    no post_id, not against the seed."""
    keys = ["deliveries_per_s", "deliveries_per_cpu_s", "lat_p50_ms", "lat_p99_ms"]
    if "service" not in kinds:
        return {"scenario": "readers", "skipped": "the service is not measured"}
    measured = await run_readers(plan)
    variants = []
    base = median_of(measured["runs"]["no post_id"], "deliveries_per_s")
    for name, runs in measured["runs"].items():
        med = {k: median_of(runs, k) for k in keys}
        d = med["deliveries_per_s"]
        ratio = {"deliveries_per_s": round(d / base, 3) if d is not None and base else None}
        variants.append(
            {"variant": f"N={plan.readers_n} {name}", "median": {"service": med},
             "ratio": ratio, "runs": {"service": runs}}
        )  # fmt: skip
    line = emit("readers (ratio: vs no post_id)", plan, variants, keys)
    line["get_readers"] = measured["get_readers"]
    print(json.dumps({"get_readers": measured["get_readers"]}), flush=True)
    return line


SCENARIO_RUNNERS = {
    "fanout": scenario_fanout,
    "latency": scenario_latency,
    "slow": scenario_slow,
    "memory": scenario_memory,
    "connect": scenario_connect,
    "outbox": scenario_outbox,
    "full": scenario_full,
    "storm": scenario_storm,
    "redis": scenario_redis,
    "publish": scenario_publish,
    "readers": scenario_readers,
}


# ---------------------------------------------------------------- main


async def main_async(args: argparse.Namespace) -> int:
    plan = Plan.quick() if args.quick else Plan()
    if args.rounds:
        plan.fanout_rounds = plan.latency_rounds = plan.connect_rounds = args.rounds
    if args.workers:
        plan.workers = args.workers
    kinds: tuple[str, ...] = KINDS
    ok, why = service_available()
    if args.only:
        kinds = (args.only,)
    elif not ok:
        print(f"wsbroadcast is not available ({why}): running the baseline only", file=sys.stderr)
        kinds = ("baseline",)
    if "service" in kinds and not ok:
        print(f"wsbroadcast is not available: {why}", file=sys.stderr)
        return 2
    names = args.scenario or [s for s in SCENARIOS if args.long or s not in LONG]
    opts, source = uvicorn_options()
    header = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "plan": asdict(plan),
        "kinds": kinds,
        "machine": machine(),
        "uvicorn_options": opts,
        "uvicorn_options_from": source,
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
    }
    print(
        f"bench: {plan.mode} mode, {', '.join(names)}; {', '.join(kinds)}",
        file=sys.stderr,
        flush=True,
    )
    results: dict[str, Any] = {}
    t = time.time()
    for name in names:
        results[name] = await SCENARIO_RUNNERS[name](kinds, plan)
    rows = targets(results, plan)
    print(targets_table(rows), flush=True)
    out = {**header, "seconds": round(time.time() - t), "results": results, "targets": rows}
    (HERE / "results").mkdir(exist_ok=True)
    path = HERE / "results" / ("latest.json" if not args.output else args.output)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"bench: {round(time.time() - t)} s; results in {path}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, one round: for iterating"
    )
    parser.add_argument(
        "--scenario", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)"
    )
    parser.add_argument(
        "--long",
        action="store_true",
        help=f"also the long scenarios ({', '.join(LONG)}), when no --scenario is given",
    )
    parser.add_argument("--only", choices=KINDS, help="run only the service or only the baseline")
    parser.add_argument("--rounds", type=int, help="rounds for fan-out, latency and connect")
    parser.add_argument("--workers", type=int, help="load generator processes (default 1)")
    parser.add_argument("--output", help="file name under bench/results/ (default latest.json)")
    args = parser.parse_args(argv)
    if shutil.which("taskset") is None:
        print(
            "bench: taskset not found (util-linux): processes will not be pinned", file=sys.stderr
        )
    raise_nofile()
    pin_self_to_load_core()
    return uvloop.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
