"""The outbox's lag: a row's COMMIT returning in the blog to its event read by a subscriber.

One wsbroadcast (memory broker) relaying a fresh database on a PostgreSQL server
(`WSB_BENCH_POSTGRES_URL`, default the machine's own at 127.0.0.1:5432, user postgres), one
row per transaction, at rest (a row every 100 ms) and open loop at 1,000 rows a second.
The service only: the seed design has no outbox.

    python -m bench --scenario outbox --only service
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from typing import Any

import orjson
import psycopg
import websockets

from bench.measure import Plan, pct
from bench.procs import Server

SERVER_URL = os.environ.get(
    "WSB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
CONNECTIONS = 32  # inserting sessions: each COMMIT waits on its WAL flush, so many are needed


async def run_outbox(plan: Plan, rate: int | None) -> dict[str, Any]:
    """`rate` rows a second for the plan's latency window (None: at rest, one every 100 ms)."""
    name = "wsb_bench_" + secrets.token_hex(4)
    async with await psycopg.AsyncConnection.connect(SERVER_URL, autocommit=True) as admin:
        await admin.execute(f"CREATE DATABASE {name}")
    url = SERVER_URL.rpartition("/")[0] + "/" + name
    server = Server("service", env={"WSB_OUTBOX_URL": url})
    try:
        await server.start()
        return await _measure(server, url, plan, rate)
    finally:
        await asyncio.to_thread(server.stop)
        async with await psycopg.AsyncConnection.connect(SERVER_URL, autocommit=True) as admin:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


async def _measure(server: Server, url: str, plan: Plan, rate: int | None) -> dict[str, Any]:
    count = 100 if rate is None else int(rate * plan.latency_seconds)
    interval = 0.1 if rate is None else 1 / rate
    committed: dict[int, float] = {}
    received: dict[int, float] = {}
    async with websockets.connect(
        f"ws://127.0.0.1:{server.port}/ws", max_queue=None, open_timeout=10
    ) as ws:
        sessions = [
            await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(CONNECTIONS)
        ]
        try:
            await _until_relaying(sessions[0])
            done = asyncio.Event()

            async def read() -> None:
                while len(received) < count:
                    message = orjson.loads(await ws.recv())
                    if message.get("type") == "blog_update":
                        received[message["data"]["seq"]] = time.monotonic()
                done.set()

            async def insert(session: psycopg.AsyncConnection[Any], first: int) -> None:
                for seq in range(first, count, CONNECTIONS):
                    delay = start + seq * interval - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    data = orjson.dumps({"post_id": "p1", "action": "updated", "seq": seq})
                    await session.execute(
                        "INSERT INTO wsb_outbox (type, data) VALUES ('blog_update', %s)",
                        [data.decode()],
                    )
                    committed[seq] = time.monotonic()

            reader = asyncio.create_task(read())
            start = time.monotonic() + 0.2
            await asyncio.gather(*(insert(s, i) for i, s in enumerate(sessions)))
            inserted_in = max(committed.values()) - start
            await asyncio.wait_for(done.wait(), 60)
            await reader
        finally:
            for session in sessions:
                await session.close()
    lags = sorted((received[s] - committed[s]) * 1000 for s in committed if s in received)
    return {
        "rows": count,
        "delivered": len(received),
        "rows_per_s": round(count / inserted_in) if rate else None,
        "lag_p50_ms": _round(pct(lags, 50)),
        "lag_p99_ms": _round(pct(lags, 99)),
        "lag_max_ms": _round(max(lags)),
    }


async def _until_relaying(conn: psycopg.AsyncConnection[Any], within: float = 30) -> None:
    """Wait for the relay to have made its tables (it holds the lock by then)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        row = await (await conn.execute("SELECT to_regclass('wsb_outbox_relay')")).fetchone()
        if row and row[0]:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the relay did not create its tables")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
