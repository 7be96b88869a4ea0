"""The reconnect storm: subscribers 100 events behind drop at once and come back with `since`.

A deploy cuts every browser at once; each comes back asking for what it missed. Here
`storm_n` tracked subscribers (each checks the publisher's `seq` numbers: none missed, none
twice) drop together, 100 events are posted while they are away, and all of them reconnect
at once with `since` their last id, while live events keep coming at `storm_rate` a second.
`storm_steady` subscribers stay connected throughout: their latency during the storm is
compared with a quiet run (the same rate, everyone connected, no storm) on the same server.
Live events are paced, each POST awaited: the seq numbers must arrive in order for the
check. The connect rate limit is lifted (the bench's servers run with `--connect-rate 100000`),
and here the header deadline too (see `run_storm`).
The service only: the seed design has no `since`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.measure import SETUP_NOTES, Meter, Plan, pct, wait_for_quiet, ws_url
from bench.procs import SERVER_CORE, Server, Workers, combined, latencies_ms, source_addresses
from bench.publisher import PostLog, Publisher, event_body


async def paced(pub: Publisher, rate: float, count: int, pad: int, first_seq: int) -> PostLog:
    """`count` POSTs at about `rate` a second, each awaited before the next: the seq
    numbers must be accepted in order for the subscribers to check them (an open loop's
    POSTs in flight side by side can be accepted in either order)."""
    log = PostLog()
    start = time.monotonic()
    for k in range(count):
        delay = start + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await pub.post(event_body(first_seq + k, pad), log, within=10)
    return log


def listen_counters() -> dict[str, int]:
    """The kernel's count of handshakes dropped because a listen queue was full, and of
    SYN cookies sent (machine-wide: other people's tests can add to them)."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    out: dict[str, int] = {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            for key in ("ListenOverflows", "ListenDrops", "SyncookiesSent"):
                out[key] = int(table.get(key, 0))
    return out


async def _connected(pub: Publisher) -> int:
    """WebSocket subscribers the server holds now, from its /metrics."""
    status, body = await pub.get("/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics answered {status}")
    for line in body.decode().splitlines():
        if line.startswith('wsb_connections{transport="ws"}'):
            return int(float(line.split()[-1]))
    return 0


async def run_storm(plan: Plan) -> dict[str, Any]:
    SETUP_NOTES.clear()
    SETUP_NOTES.update(await wait_for_quiet())
    # The load process is the slower side here (its core is busy with 10,000 handshakes
    # and a million replayed frames): it can take longer than the 10 s header deadline
    # to send a request line for a connection it opened, which 10,000 browsers on their
    # own machines would not. That deadline (slowloris) is lifted as the rate limit is.
    server = Server(
        "service",
        client_buffer=plan.client_buffer,
        name="service-storm",
        env={"WSB_HEADER_TIMEOUT": "120"},
    )
    await server.start()
    # The storm's load process has the load core to itself: it is the limit there. The
    # steady subscribers (2,000 frames a second in all) sit beside the server, so their
    # latency is the server's, not that of a load core the storm keeps busy.
    storm, steady = Workers(1), Workers(1, SERVER_CORE)
    pub = Publisher(server.port)
    first = source_addresses(plan.storm_n)
    again = source_addresses(plan.storm_n, skip=len(first))  # no TIME_WAIT in the way
    try:
        await storm.start()
        await steady.start()
        url = ws_url(server)
        conn = await storm.connect(url, plan.storm_n, sources=first, track=True)
        await steady.connect(url, plan.storm_steady, track=True)
        pad = plan.fanout_pad

        # Everyone has seq 0, so every storm subscriber has an id to resume from.
        await pub.back_to_back(1, pad, 0, within=30)
        await asyncio.gather(
            storm.all("wait_seq", seq=0, timeout=60, idle=15, latency=False),
            steady.all("wait_seq", seq=0, timeout=60, idle=15),
        )

        # The quiet run: the live rate with everyone connected, no storm.
        quiet_n = int(plan.storm_rate * plan.storm_quiet_s)
        await asyncio.gather(storm.all("reset"), steady.all("reset"))
        quiet_log = await paced(pub, plan.storm_rate, quiet_n, pad, 1)
        last = quiet_n
        quiet_both = await asyncio.gather(
            steady.all("wait_seq", seq=last, timeout=60, idle=15),
            storm.all("wait_seq", seq=last, timeout=60, idle=15, latency=False),
        )
        quiet_steady: list[dict[str, Any]] = quiet_both[0]
        quiet_lat = latencies_ms(quiet_steady)

        # The drop: all at once; wait until the server has let every one go.
        dropped = (await storm.all("drop"))[0]
        gone_within = 30.0
        t = time.monotonic()
        while await _connected(pub) > plan.storm_steady:
            if time.monotonic() - t > gone_within:
                break
            await asyncio.sleep(0.1)
        server_let_go_s = round(time.monotonic() - t, 2)

        # They fall behind: storm_behind events while they are away.
        behind_log = await pub.back_to_back(plan.storm_behind, pad, last + 1, within=30)
        catchup = last + plan.storm_behind
        await steady.all("wait_seq", seq=catchup, timeout=60, idle=15)
        await steady.all("reset")

        # The storm: every one back at once, live events going on.
        live_n = int(plan.storm_rate * plan.storm_live_s)
        meter = Meter(server, combined(storm, steady))
        await meter.start()
        t_storm = time.time()
        net0 = listen_counters()
        resumed_reply, live_log = await asyncio.gather(
            storm.all(
                "resume",
                url=url,
                concurrency=plan.storm_concurrency,
                sources=again,
                catchup=catchup,
            ),
            paced(pub, plan.storm_rate, live_n, pad, catchup + 1),
        )
        final = catchup + live_log.sent
        storm_r, steady_r = await asyncio.gather(
            storm.all("wait_seq", seq=final, timeout=120, idle=20, latency=False),
            steady.all("wait_seq", seq=final, timeout=60, idle=20),
        )
        cpu = meter.stop([*storm_r, *steady_r], time.time() - t_storm)
        net1 = listen_counters()
        rs = resumed_reply[0]
        st = storm_r[0]
        storm_lat = latencies_ms(steady_r)
        quiet_p99 = pct(quiet_lat, 99)
        storm_p99 = pct(storm_lat, 99)
        return {
            "subscribers": conn["ok"],
            "steady": plan.storm_steady,
            "dropped": dropped["dropped"],
            "server_let_go_s": server_let_go_s,
            "events_behind": behind_log.accepted,
            "live_events_posted": live_log.sent,
            "live_events_accepted": live_log.accepted,
            "live_posts_hung": live_log.hung,
            "reconnected": rs["ok"],
            "reconnect_failed": rs["failed"],
            "reconnect_errors": rs["errors"],
            "connected_s_p50": rs["connected_s_p50"],
            "connected_s_max": rs["connected_s_max"],
            "resumed": st["resumed"],
            "resumed_s_p50": st["resumed_s_p50"],
            "resumed_s_max": st["resumed_s_max"],
            "all_resumed_s": st["resumed_s_max"] if st["resumed"] == plan.storm_n else None,
            "missed": st["missed"],
            "duplicated": st["duplicated"],
            "with_gap_or_dup": st["with_gap_or_dup"],
            "exact": st["exact"],
            "server_closes": st["closes"],
            "steady_exact": steady_r[0]["exact"],
            "steady_missed": steady_r[0]["missed"],
            "quiet_lat_p50_ms": pct(quiet_lat, 50),
            "quiet_lat_p99_ms": quiet_p99,
            "quiet_posts": quiet_log.accepted,
            "storm_lat_p50_ms": pct(storm_lat, 50),
            "storm_lat_p99_ms": storm_p99,
            "storm_lat_max_ms": round(storm_lat[-1], 2) if storm_lat else None,
            "p99_vs_quiet": round(storm_p99 / quiet_p99, 3)
            if storm_p99 is not None and quiet_p99
            else None,
            "storm_wall_s": round(time.time() - t_storm, 1),
            # A full listen queue drops a SYN; the client sends it again 1, 3, 7, 15, 31 s on.
            **{f"storm_{k}": net1[k] - net0.get(k, 0) for k in net1},
            **cpu,
        }
    finally:
        pub.close()
        SETUP_NOTES.update(await asyncio.to_thread(server.stop))
        await storm.stop()
        await steady.stop()
