"""The report: medians over rounds, service / baseline ratios, tables, the issue's targets."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
from typing import Any

from bench.measure import Plan


def brief(result: dict[str, Any]) -> str:
    keys = (
        "error",
        "deliveries_per_s",
        "lat_p50_ms",
        "lat_p99_ms",
        "healthy_share",
        "posts_hung",
        "kb_per_connection",
        "accepted_per_s",
        "server_cpu_util",
        "load_cpu_util",
        "other_util_core0",
        "steal_util_core0",
        "busy_before",
        "other_util_core1",
        "wall_s",
    )
    return ", ".join(f"{k}={result[k]}" for k in keys if k in result)


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
    return round(statistics.median(values), 2) if values else None


def variant(
    name: str,
    runs: dict[str, list[dict[str, Any]]],
    keys: list[str],
    pair: tuple[str, str] = ("service", "baseline"),
) -> dict[str, Any]:
    """Medians over rounds for each kind, and the ratios of the pair's (service / baseline
    unless named: redis / memory for the broker scenario)."""
    med = {kind: {k: median_of(rs, k) for k in keys} for kind, rs in runs.items()}
    ratio: dict[str, float | None] = {}
    a_kind, b_kind = pair
    if a_kind in med and b_kind in med:
        for k in keys:
            a, b = med[a_kind][k], med[b_kind][k]
            ratio[k] = round(a / b, 3) if a is not None and b else None
    return {"variant": name, "median": med, "ratio": ratio, "runs": runs, "pair": list(pair)}


def table(title: str, variants: list[dict[str, Any]], keys: list[str]) -> str:
    a_kind, b_kind = variants[0].get("pair", ("service", "baseline")) if variants else ("", "")
    lines = [f"== {title}", f"{'':34}{a_kind:>14}{b_kind:>14}{'ratio':>10}"]
    for v in variants:
        for k in keys:
            s = v["median"].get(a_kind, {}).get(k)
            b = v["median"].get(b_kind, {}).get(k)
            r = v["ratio"].get(k)
            lines.append(
                f"{(v['variant'] + ' ' + k)[:34]:34}{fmt(s):>14}{fmt(b):>14}"
                f"{(fmt(r) + 'x') if r is not None else '':>10}"
            )
    return "\n".join(lines)


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v >= 1000:
        return f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def emit(
    name: str,
    plan: Plan,
    variants: list[dict[str, Any]],
    keys: list[str],
    figures: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`figures`: a scenario's own results beside the table (the full scenario's ratio of
    two sizes, the storm's story)."""
    line: dict[str, Any] = {"scenario": name, "mode": plan.mode, "variants": variants}
    compact: dict[str, Any] = {
        "scenario": name,
        "mode": plan.mode,
        "variants": [{k: v[k] for k in ("variant", "median", "ratio")} for v in variants],
    }
    if figures is not None:
        line["figures"] = compact["figures"] = figures
    print(json.dumps(compact), flush=True)
    print(table(name, variants, keys), flush=True)
    for k, value in (figures or {}).items():
        print(f"{k[:34]:34}{fmt(value):>14}", flush=True)
    return line


# ---------------------------------------------------------------- targets


def find(results: dict[str, Any], scenario: str, name: str) -> dict[str, Any] | None:
    for v in results.get(scenario, {}).get("variants", []):
        if v["variant"] == name:
            found: dict[str, Any] = v
            return found
    return None


def targets(results: dict[str, Any], plan: Plan) -> list[dict[str, Any]]:
    """The issue's floors and aims, checked against this run's figures."""
    out: list[dict[str, Any]] = []

    def add(
        name: str,
        value: Any,
        floor: str,
        ok: bool | None,
        aim: str = "",
        aim_ok: bool | None = None,
    ) -> None:
        out.append(
            {
                "target": name,
                "value": value,
                "floor": floor,
                "floor_met": ok,
                "aim": aim,
                "aim_met": aim_ok,
            }
        )

    big = max((n for n, _ in plan.fanout), default=0)
    v = find(results, "fanout", f"N={big}")
    if v:
        r = v["ratio"].get("deliveries_per_s")
        add(
            f"fan-out N={big} deliveries/s vs seed",
            r,
            ">= 1.0x",
            None if r is None else r >= 1.0,
            ">= 1.5x",
            None if r is None else r >= 1.5,
        )
    v = find(results, "latency", "20/s")
    if v:
        r = v["ratio"].get("lat_p99_ms")
        add("latency 20/s p99 vs seed", r, "<= 1.2x", None if r is None else r <= 1.2)
    v = find(results, "latency", "50/s")
    if v:
        p = v["median"].get("service", {}).get("lat_p99_ms")
        add("latency 50/s p99 ms", p, "", None, "< 100 ms", None if p is None else p < 100)
    v, c = find(results, "slow", "with slow"), find(results, "slow", "no slow")
    if v and v["runs"].get("service"):
        run = v["runs"]["service"][0]
        if "error" in run:
            add("slow subscribers", run["error"], "runs", False)
        else:
            every = (
                run["complete_subscribers"] == run["healthy"]
                and run["events_posted"] == run["events_planned"]
            )
            add(
                "slow: every healthy subscriber gets every event",
                f"{run['complete_subscribers']}/{run['healthy']} complete",
                "all",
                every,
            )
            ref = c["median"].get("service", {}).get("lat_p99_ms") if c else None
            p99 = run["lat_p99_ms"]
            add(
                "slow: healthy p99 vs no-slow run",
                f"{p99} / {ref} ms",
                "<= 2x",
                None if ref is None or p99 is None else p99 <= 2 * ref,
            )
            s = run.get("slow_summary", {})
            add(
                "slow: each slow one closed (1013) or cut within 5 s of its buffer filling",
                f"{s.get('released')}/{s.get('of')} released, at most "
                f"{s.get('release_after_full_s_max')} s after the socket buffers filled",
                "yes",
                s.get("within_5s_of_buffer_full"),
            )
            add("slow: POSTs that hung", run["posts_hung"], "0", run["posts_hung"] == 0)
            add(
                "slow: server RSS growth MB",
                run["rss_growth_mb"],
                "< 10",
                run["rss_growth_mb"] < 10,
            )
    v = find(results, "memory", f"N={plan.memory_n}")
    if v:
        s = v["median"].get("service", {}).get("kb_per_connection")
        b = v["median"].get("baseline", {}).get("kb_per_connection")
        add(
            "memory KB per idle connection",
            s,
            f"<= seed ({b})",
            None if s is None or b is None else s <= b,
            "<= 20",
            None if s is None else s <= 20,
        )
    v = find(results, "connect", f"N={plan.connect_n}")
    if v:
        r = v["ratio"].get("accepted_per_s")
        add("connect: accepted/s vs seed", r, ">= 1.0x", None if r is None else r >= 1.0)
    v = find(results, "outbox", "at rest")
    if v:
        p99 = v["median"].get("service", {}).get("lag_p99_ms")
        add("outbox at rest: commit to delivery p99 ms", p99, "", None, "< 100",
            None if p99 is None else p99 < 100)  # fmt: skip
    unfiltered = find(results, "readers", f"N={plan.readers_n} no post_id")
    for name in ("post_id", "post_id readers=1"):
        v = find(results, "readers", f"N={plan.readers_n} {name}")
        if v:
            r = v["ratio"].get("deliveries_per_s")
            label = f"readers: 100 posts, {name}: deliveries/s vs no post_id"
            add(label, r, ">= 0.95x", None if r is None else r >= 0.95)
            # The server's own cost: deliveries/s is the load's when the server idles.
            c, c0 = (_service(x, "deliveries_per_cpu_s") for x in (v, unfiltered))
            r = round(c / c0, 3) if c and c0 else None
            add(f"readers: {name}: per server-CPU-s vs no post_id", r, "-", None)
    latency = results.get("readers", {}).get("get_readers") or {}
    for kind in ("post", "top"):
        p = latency.get(f"{kind}_p99_ms")
        if p is not None:
            what = "?post_id=p1" if kind == "post" else "?top=10"
            add(
                f"GET /readers{what} p99 ms at {latency.get('subscribers')} subscribers",
                p,
                "< 5 ms",
                p < 5,
            )
    targets_round_two(results, plan, add)
    return out


def _service(v: dict[str, Any] | None, key: str, kind: str = "service") -> Any:
    return v["median"].get(kind, {}).get(key) if v else None


def targets_round_two(results: dict[str, Any], plan: Plan, add: Any) -> None:
    """Issue 19's targets: the full process, the storm, Redis, publishing."""
    full = find(results, "full", f"N={plan.full_n}")
    if full and full["runs"].get("service"):
        runs = full["runs"]["service"]
        every = [r.get("every_subscriber_every_event") for r in runs]
        first = runs[0]
        add(
            f"full: {plan.full_n} connected, every subscriber gets every event",
            f"{first.get('connected')} connected; {first.get('complete_subscribers')} complete",
            "all",
            bool(every) and all(every),
        )
        kb = _service(full, "kb_per_connection")
        add("full: KB per idle connection", kb, "", None, "<= 20", None if kb is None else kb <= 20)
        r = results["full"].get("figures", {}).get("full_vs_ref_deliveries_per_s")
        add(
            f"full: deliveries/s at {plan.full_n} vs {plan.full_ref_n} (same run)",
            r,
            ">= 0.8x",
            None if r is None else r >= 0.8,
        )
    storm = find(results, "storm", f"N={plan.storm_n}")
    if storm and storm["runs"].get("service"):
        run = storm["runs"]["service"][0]
        if "error" in run:
            add("storm", run["error"], "runs", False)
        else:
            t = run.get("all_resumed_s")
            add(
                f"storm: all {plan.storm_n} resumed (s)",
                t if t is not None else f"{run.get('resumed')} resumed",
                "< 10 s",
                t is not None and t < 10,
            )
            clean = run["missed"] == 0 and run["duplicated"] == 0 and run["exact"] == plan.storm_n
            add(
                "storm: nothing missed or duplicated",
                f"{run['exact']}/{plan.storm_n} exact; missed {run['missed']}, "
                f"duplicated {run['duplicated']}",
                "none",
                clean,
            )
            ratio = run.get("p99_vs_quiet")
            add(
                "storm: connected ones' p99 vs a quiet run",
                f"{run.get('storm_lat_p99_ms')} / {run.get('quiet_lat_p99_ms')} ms",
                "<= 2x",
                None if ratio is None else ratio <= 2,
            )
    pair = find(results, "redis", f"N={plan.redis_n}")
    if pair:
        r = pair["ratio"].get("deliveries_per_s")
        add(
            f"redis: fan-out N={plan.redis_n} deliveries/s vs embedded",
            r,
            ">= 0.9x",
            None if r is None else r >= 0.9,
        )
    two = find(results, "redis", "two instances")
    if two:
        d = _service(two, "deliveries_per_s", "redis")
        add("redis: two instances on one Redis, total deliveries/s", d, "", None)
    for name, key, floor in (
        (f"batch {plan.publish_batch}", "events_per_s", 20000),
        ("single", "requests_per_s", 2000),
    ):
        v = find(results, "publish", name)
        if v:
            # Sustained: accepted and delivered both (the hub fans out behind the answers).
            x, d = _service(v, key), _service(v, "delivered_events_per_s")
            ok = None
            if x is not None and d is not None:
                ok = min(x, d) >= floor and _service(v, "every_event_delivered") == 1
            add(
                f"publish {name}: {key.replace('_', ' ')} accepted; delivered",
                f"{fmt(x)}; {fmt(d)}",
                f">= {floor:,} both",
                ok,
            )


def targets_table(rows: list[dict[str, Any]]) -> str:
    def mark(ok: bool | None) -> str:
        return {True: "met", False: "MISSED", None: "-"}[ok]

    lines = ["== targets"]
    for r in rows:
        lines.append(
            f"{r['target'][:60]:60} {str(r['value'])[:60]:60} floor {r['floor'] or '-'}: "
            f"{mark(r['floor_met'])}"
            + (f"; aim {r['aim']}: {mark(r['aim_met'])}" if r["aim"] else "")
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    with open("/proc/meminfo") as f:
        mem_gb = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    versions = {}
    for mod in ("uvicorn", "starlette", "fastapi", "picows", "uvloop", "httptools", "websockets"):
        with contextlib.suppress(Exception):
            versions[mod] = __import__(mod).__version__
    with contextlib.suppress(Exception):
        import importlib.metadata as md

        versions["wsbroadcast"] = md.version("wsbroadcast")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gb": mem_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
    }


# ---------------------------------------------------------------- the README's tables


def markdown(doc: dict[str, Any]) -> str:
    """The README's results section, from a results file."""
    res = doc["results"]
    m = doc["machine"]
    v = m.get("versions", {})
    lines = [
        f"Measured {doc['started'][:16].replace('T', ' ')} with `{doc['command']}` "
        f"({doc['plan']['mode']} mode, {doc['seconds']} s), on {m['cores']} cores of "
        f"{m['cpu']}, {m['mem_gb']} GB, {m['os']}, Python {m['python']}; "
        + ", ".join(f"{k} {v[k]}" for k in sorted(v))
        + ". Medians over the rounds; ratio = service / seed design.",
        "",
        "| scenario | figure | wsbroadcast | seed design | ratio |",
        "| --- | --- | ---: | ---: | ---: |",
    ]

    def row(scn: str, name: str, key: str, label: str) -> None:
        found = find(res, scn, name)
        if not found:
            return
        s = found["median"].get("service", {}).get(key)
        b = found["median"].get("baseline", {}).get(key)
        r = found["ratio"].get(key)
        ratio = f"{r:.2f}x" if r is not None else ""
        lines.append(f"| {scn} {name} | {label} | {fmt(s)} | {fmt(b)} | {ratio} |")

    for n, _ in doc["plan"]["fanout"]:
        row("fanout", f"N={n}", "deliveries_per_s", "deliveries/s")
        row("fanout", f"N={n}", "deliveries_per_cpu_s", "deliveries per server-CPU-s")
        row("fanout", f"N={n}", "lat_p50_ms", "latency p50 ms")
        row("fanout", f"N={n}", "lat_p99_ms", "latency p99 ms")
    for rate in doc["plan"]["latency_rates"]:
        for key in ("lat_p50_ms", "lat_p99_ms", "lat_max_ms"):
            row("latency", f"{rate}/s", key, key.replace("lat_", "").replace("_ms", " ms"))
    for name in ("with slow", "no slow"):
        row("slow", name, "healthy_share", "healthy delivered share")
        row("slow", name, "lat_p99_ms", "healthy p99 ms")
        row("slow", name, "rss_growth_mb", "server RSS growth MB")
        row("slow", name, "posts_hung", "POSTs hung")
    row("memory", f"N={doc['plan']['memory_n']}", "kb_per_connection", "KB per idle connection")
    row("connect", f"N={doc['plan']['connect_n']}", "accepted_per_s", "accepted/s")
    lines += round_two_markdown(doc)
    slow = find(res, "slow", "with slow")
    if slow:
        lines.append("")
        for kind in ("service", "baseline"):
            for run in slow["runs"].get(kind, []):
                lines.append(f"Slow subscribers, {kind}: {slow_story(run)}")
    lines += ["", "| target | measured | floor | aim |", "| --- | --- | --- | --- |"]
    mark = {True: "met", False: "**missed**", None: "-"}
    for t in doc.get("targets", []):
        floor = f"{t['floor']}: {mark[t['floor_met']]}" if t["floor"] else "-"
        aim = f"{t['aim']}: {mark[t['aim_met']]}" if t["aim"] else "-"
        lines.append(f"| {t['target']} | {t['value']} | {floor} | {aim} |")
    return "\n".join(lines)


def round_two_markdown(doc: dict[str, Any]) -> list[str]:
    """The service-only scenarios (full, storm, redis, publish): one row per figure."""
    res, plan = doc["results"], doc["plan"]
    lines: list[str] = []

    def row(scn: str, name: str, key: str, label: str, kind: str = "service") -> None:
        found = find(res, scn, name)
        if found:
            value = found["median"].get(kind, {}).get(key)
            lines.append(f"| {scn} {name} | {label} | {fmt(value)} | | |")

    for n in (plan.get("full_ref_n"), plan.get("full_n")):
        row("full", f"N={n}", "deliveries_per_s", "deliveries/s")
        row("full", f"N={n}", "deliveries_per_cpu_s", "deliveries per server-CPU-s")
        row("full", f"N={n}", "complete_subscribers", "subscribers that got every event")
    row("full", f"N={plan.get('full_n')}", "kb_per_connection", "KB per idle connection")
    ratio = res.get("full", {}).get("figures", {}).get("full_vs_ref_deliveries_per_s")
    if ratio is not None:
        lines.append(
            f"| full | deliveries/s, N={plan['full_n']} / N={plan['full_ref_n']} | "
            f"{ratio:.2f}x | | |"
        )
    n = f"N={plan.get('storm_n')}"
    for key, label in (
        ("all_resumed_s", "all resumed, s"),
        ("resumed_s_p50", "resumed p50, s"),
        ("missed", "events missed"),
        ("duplicated", "events duplicated"),
        ("quiet_lat_p99_ms", "connected ones' p99 ms, quiet"),
        ("storm_lat_p99_ms", "connected ones' p99 ms, storm"),
    ):
        row("storm", n, key, label)
    pair = find(res, "redis", f"N={plan.get('redis_n')}")
    if pair:
        for key, label in (
            ("deliveries_per_s", "deliveries/s"),
            ("deliveries_per_cpu_s", "deliveries per server-CPU-s"),
            ("lat_p99_ms", "latency p99 ms"),
        ):
            a = pair["median"].get("redis", {}).get(key)
            b = pair["median"].get("memory", {}).get(key)
            r = pair["ratio"].get(key)
            ratio_s = f"{r:.2f}x" if r is not None else ""
            lines.append(
                f"| redis {pair['variant']} | {label}: Redis, embedded | {fmt(a)} | {fmt(b)} "
                f"| {ratio_s} |"
            )
    row("redis", "two instances", "deliveries_per_s", "total deliveries/s", "redis")
    row("redis", "two instances", "deliveries_per_cpu_s", "per server-CPU-s (both)", "redis")
    row("publish", f"batch {plan.get('publish_batch')}", "events_per_s", "events/s accepted")
    row(
        "publish",
        f"batch {plan.get('publish_batch')}",
        "delivered_events_per_s",
        "events/s delivered",
    )
    row("publish", "single", "requests_per_s", "POSTs/s accepted (202)")
    row("publish", "single", "answered_per_s", "POSTs/s answered (202 or 503)")
    row("publish", "single", "delivered_events_per_s", "events/s delivered")
    return lines


def slow_story(run: dict[str, Any]) -> str:
    """What became of the slow subscribers, in one sentence."""
    if "error" in run:
        return str(run["error"])
    s = run.get("slow_summary", {})
    parts = [
        f"{run['complete_subscribers']}/{run['healthy']} healthy subscribers got all "
        f"{run['events_posted']} events posted of {run['events_planned']}"
    ]
    if run.get("gave_up"):
        parts.append(f"posting stopped at {run['posting_seconds']} s ({run['gave_up']})")
    if s:
        how = ", ".join(s["how"])
        parts.append(
            f"{s['released']}/{s['of']} slow ones released ({how}), "
            f"{s['release_after_full_s_median']} s (max {s['release_after_full_s_max']} s) "
            "after their socket buffers filled; close codes drained: "
            + ", ".join(s["close_codes_seen"])
        )
    parts.append(f"{run['posts_hung']} POSTs hung; RSS +{run['rss_growth_mb']} MB")
    return "; ".join(parts) + "."


if __name__ == "__main__":
    import sys
    from pathlib import Path

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results/latest.json"
    print(markdown(json.loads(path.read_text())))
