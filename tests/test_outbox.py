"""The Postgres outbox: rows committed to `wsb_outbox` go out once each, in id order.

Real PostgreSQL throughout, never the machine's own server: a fresh database per test on
the module's cluster, or, for the outage, a cluster of the test's own that it stops and
starts (tests/postgres_server.py).
Instances are real servers; the kill test runs them as processes on a real redis-server.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import orjson
import psycopg
import pytest
import websockets
from anyio.to_thread import run_sync

from tests.conftest import (
    FACTOR,
    Process,
    eventually,
    free_port,
    notice,
    receive,
    receive_n,
    running,
)
from tests.postgres_server import Cluster, fresh_database
from tests.redis_server import RedisServer
from wsbroadcast.outbox import hide_password
from wsbroadcast.outbox_schema import RELAY_LOCK, SCHEMA, WAKE_LOCK, ensure_schema
from wsbroadcast.settings import SettingsError, load_settings

pytestmark = pytest.mark.anyio

Conn = psycopg.AsyncConnection[Any]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """One cluster for the tests that never stop it; each test gets its own database."""
    server = Cluster(free_port())
    server.init()
    server.start()
    yield server
    server.remove()


@pytest.fixture
def database(cluster: Cluster) -> Iterator[str]:
    with fresh_database(cluster.url) as url:
        yield url


def row(seq: int, post_id: str = "p1") -> tuple[str, str]:
    return "blog_update", orjson.dumps(
        {"post_id": post_id, "action": "created", "seq": seq}
    ).decode()


async def insert(conn: Conn, *rows: tuple[str, str]) -> None:
    await conn.cursor().executemany("INSERT INTO wsb_outbox (type, data) VALUES (%s, %s)", rows)


async def scalar(url: str, query: str, params: Any = None) -> Any:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        found = await (await conn.execute(query, params)).fetchone()
        return found[0] if found else None


async def holder(url: str, what: str = "a.application_name") -> Any:
    """The application_name (or `what`) of the session holding the relay lock, if any."""
    return await scalar(
        url,
        f"""SELECT {what} FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s
             AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database
                                                  WHERE datname = current_database())""",
        [RELAY_LOCK >> 32, RELAY_LOCK & 0xFFFFFFFF],
    )


async def relaying(url: str, seconds: float = 10) -> str:
    """Wait for a relay to hold the lock (its tables made); who it is."""
    found: list[str] = []

    async def held() -> bool:
        name = await holder(url)
        if name is not None:
            found.append(name)
        return name is not None

    await eventually(held, seconds)
    return found[-1]


async def idle_relay(url: str) -> bool:
    """The relay waits for a notification: it holds the wake lock."""
    query = """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND mode = 'ExclusiveLock' AND objid = %s"""
    return bool(await scalar(url, query, [WAKE_LOCK & 0xFFFFFFFF]))


async def empty(url: str) -> bool:
    return bool(await scalar(url, "SELECT count(*) = 0 FROM wsb_outbox"))


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [m["data"]["seq"] for m in messages if m["type"] == "blog_update"]


# --- one instance ---------------------------------------------------------------------


async def test_a_committed_insert_is_delivered_and_a_rolled_back_one_is_not(database: str) -> None:
    async with running(outbox_url=database) as svc, svc.subscribe() as ws:
        await relaying(database)
        async with await psycopg.AsyncConnection.connect(database) as conn:
            async with conn.transaction(force_rollback=True):
                await insert(conn, row(1))
            async with conn.transaction():
                await insert(conn, row(2))
        message = await receive(ws)
        assert message["type"] == "blog_update"
        assert message["data"] == {"post_id": "p1", "action": "created", "seq": 2}
        assert message["id"]  # the broker's id, like any event
        await eventually(lambda: empty(database))
        metrics = await svc.metrics()
    assert "wsb_outbox_relayed_total 1.0" in metrics
    assert "wsb_outbox_up 1.0" in metrics
    assert "wsb_outbox_lag_seconds_count 1.0" in metrics


async def test_at_rest_a_commit_wakes_the_relay_rather_than_its_one_second_poll(
    database: str,
) -> None:
    lags: list[float] = []
    async with running(outbox_url=database) as svc, svc.subscribe() as ws:
        await relaying(database)
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
            for seq in range(7):
                await eventually(lambda: idle_relay(database))  # not reading, nor about to
                await insert(conn, row(seq))
                committed = time.monotonic()
                assert seqs([await receive(ws)]) == [seq]
                lags.append(time.monotonic() - committed)
    # Woken by polls alone, the median would be about half the 1 s poll.
    assert sorted(lags)[len(lags) // 2] < 0.25, lags


async def test_ten_thousand_rows_in_twenty_transactions_arrive_in_id_order_each_once(
    database: str,
) -> None:
    total, per_transaction = 10_000, 500
    async with (
        running(outbox_url=database, client_buffer=total) as svc,
        websockets.connect(svc.ws_url(), max_queue=None, open_timeout=10 * FACTOR) as ws,
    ):
        await relaying(database)
        async with await psycopg.AsyncConnection.connect(database) as conn:
            for start in range(0, total, per_transaction):
                async with conn.transaction():
                    await conn.execute(
                        """INSERT INTO wsb_outbox (type, data)
                           SELECT 'blog_update', jsonb_build_object(
                               'post_id', 'p1', 'action', 'updated', 'seq', n)
                           FROM generate_series(%s::int, %s::int) AS n ORDER BY n""",
                        [start, start + per_transaction - 1],
                    )
        messages = await receive_n(ws, total, seconds=60)
        await eventually(lambda: empty(database))
        metrics = await svc.metrics()
    assert seqs(messages) == list(range(total))
    assert len({m["id"] for m in messages}) == total
    assert f"wsb_outbox_relayed_total {float(total)}" in metrics
    assert await scalar(database, "SELECT count(*) FROM wsb_outbox_relay") == 0


async def test_a_bad_row_moves_to_the_dead_table_and_the_rows_behind_it_are_delivered(
    database: str,
) -> None:
    async with running(outbox_url=database) as svc, svc.subscribe() as ws:
        await relaying(database)
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
            await insert(
                conn,
                ("comment_update", '{"post_id": "p1", "action": "created"}'),
                ("no_such_type", '{"post_id": "p1"}'),
                ("blog_update", '["not", "an", "object"]'),
                row(1),
            )
        message = await receive(ws)
        assert seqs([message]) == [1]
        await eventually(lambda: empty(database))
        metrics = await svc.metrics()
        async with await psycopg.AsyncConnection.connect(database) as conn:
            dead = await (
                await conn.execute("SELECT type, data, error FROM wsb_outbox_dead ORDER BY id")
            ).fetchall()
    assert [kind for kind, _, _ in dead] == ["comment_update", "no_such_type", "blog_update"]
    errors = [error for _, _, error in dead]  # the text a POST would get as its `detail`
    assert errors[0] == "data.comment_id: must be a non-empty string"
    assert errors[1].startswith("type: unknown type 'no_such_type'")
    assert errors[2].startswith("data: must be an object")
    assert dead[0][1] == {"post_id": "p1", "action": "created"}  # kept as written
    assert "wsb_outbox_dead_total 3.0" in metrics
    assert "wsb_outbox_relayed_total 1.0" in metrics


async def test_a_row_without_a_timestamp_goes_out_stamped_with_its_created_at(
    database: str,
) -> None:
    async with running(outbox_url=database) as svc, svc.subscribe() as ws:
        await relaying(database)
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
            await conn.execute(
                """INSERT INTO wsb_outbox (type, data, created_at) VALUES
                   ('blog_update', '{"post_id": "p", "action": "created"}',
                    '2026-01-02 03:04:05.25+02')"""
            )
            await conn.execute(
                """INSERT INTO wsb_outbox (type, data, "timestamp") VALUES
                   ('blog_update', '{"post_id": "p", "action": "deleted"}',
                    '2026-05-06 07:08:09Z')"""
            )
        first, second = await receive_n(ws, 2)
    assert first["timestamp"] == "2026-01-02T01:04:05.250000Z"
    assert second["timestamp"] == "2026-05-06T07:08:09Z"


async def test_instances_starting_at_once_create_one_table_and_one_trigger(database: str) -> None:
    instances, connected, gate = 6, [], anyio.Event()

    async def start() -> None:
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
            connected.append(conn)
            if len(connected) == instances:
                gate.set()  # every connection open: the race is the DDL's alone
            await gate.wait()
            await ensure_schema(conn)

    async with anyio.create_task_group() as tasks:
        for _ in range(instances):
            tasks.start_soon(start)
    assert await scalar(database, "SELECT count(*) FROM pg_class WHERE relname = 'wsb_outbox'") == 1
    assert (
        await scalar(database, "SELECT count(*) FROM pg_trigger WHERE tgname = 'wsb_outbox_notify'")
        == 1
    )


# --- several instances on Redis, killed at each step ---------------------------------


class Instance:
    """`python -m wsbroadcast` on Redis, relaying the outbox under its own application_name."""

    def __init__(self, name: str, redis_url: str, database: str) -> None:
        self.name = name
        self.port = free_port()
        self.env = {
            "WSB_PORT": str(self.port),
            "WSB_BROKER_URL": redis_url,
            "WSB_OUTBOX_URL": f"{database}?application_name={name}",
            "WSB_LOG_LEVEL": "info",
        }
        self.process = Process([sys.executable, "-m", "wsbroadcast"], self.env)
        self.output = ""  # of the processes killed so far

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to Postgres or Redis."""
        self.process.popen.send_signal(signal.SIGKILL)
        self._reap()

    def restart(self) -> None:
        self.process = Process([sys.executable, "-m", "wsbroadcast"], self.env)

    def stop(self) -> None:
        if self.process.popen.poll() is None:
            self.process.popen.kill()
        self._reap()

    def _reap(self) -> None:
        self.process.popen.wait(10 * FACTOR)
        if self.process.popen.stdout and not self.process.popen.stdout.closed:
            self.output += self.process.output  # read to the end before closing
            self.process.popen.stdout.close()


async def _gone(url: str, name: str) -> bool:
    # A session waiting on a lock finds its client gone by client_connection_check_interval.
    query = "SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = %s"
    return bool(await scalar(url, query, [name]))


async def waiting_on_a_lock(url: str, name: str) -> bool:
    return bool(
        await scalar(
            url,
            """SELECT count(*) FROM pg_stat_activity
               WHERE application_name = %s AND wait_event_type = 'Lock'""",
            [name],
        )
    )


async def test_killing_the_relaying_instance_at_each_step_publishes_every_row_exactly_once(
    database: str, redis_server: RedisServer
) -> None:
    instances = {n: Instance(n, redis_server.url, database) for n in ("relay-a", "relay-b")}
    seq = 0
    takeovers: list[float] = []

    async def add(conn: Conn, count: int) -> list[int]:
        nonlocal seq
        await insert(conn, *(row(seq + i) for i in range(count)))
        seq += count
        ids = await (await conn.execute("SELECT id FROM wsb_outbox ORDER BY id")).fetchall()
        return [i for (i,) in ids]

    async def kill(name: str) -> float:
        """SIGKILL the relay; return once Postgres has ended its session (its statement undone)."""
        await run_sync(instances[name].kill)
        killed_at = time.monotonic()
        await eventually(lambda: _gone(database, name))
        return killed_at

    async def taken_over(name: str, killed_at: float) -> None:
        # Another takes over: the contract's 5 s, measured from the SIGKILL.
        await eventually(lambda: _held_by_other(name), 10)
        takeovers.append(time.monotonic() - killed_at)
        await run_sync(instances[name].restart)

    async def _held_by_other(name: str) -> bool:
        return await holder(database) not in (None, name)

    try:
        for instance in instances.values():
            await run_sync(instance.process.wait_ready)
        # Both started at once on an empty database: one table, one trigger, one relay.
        name = await relaying(database)
        assert (
            await scalar(database, "SELECT count(*) FROM pg_class WHERE relname = 'wsb_outbox'")
            == 1
        )
        assert (
            await scalar(
                database, "SELECT count(*) FROM pg_trigger WHERE tgname = 'wsb_outbox_notify'"
            )
            == 1
        )
        assert (
            await scalar(
                database,
                "SELECT count(*) FROM pg_locks"
                " WHERE locktype = 'advisory' AND granted AND objid = %s",
                [RELAY_LOCK & 0xFFFFFFFF],
            )
            == 1
        )
        head = orjson.loads(await run_sync(_get, instances["relay-a"].port, "/events/head"))["id"]

        async with (
            await psycopg.AsyncConnection.connect(database, autocommit=True) as blog,
            await psycopg.AsyncConnection.connect(database, autocommit=True) as gate,
            await psycopg.AsyncConnection.connect(database, autocommit=True) as rows_gate,
        ):
            await add(blog, 2)  # relayed as usual
            await eventually(lambda: empty(database))

            # 1. After reading: the relay cannot mark its batch in flight.
            name = await relaying(database)
            async with gate.transaction():
                await gate.execute("LOCK TABLE wsb_outbox_relay IN SHARE MODE")
                await add(blog, 3)
                await eventually(lambda: waiting_on_a_lock(database, name))
                killed_at = await kill(name)
            await taken_over(name, killed_at)

            # 2 and 3. After appending, before removing; and after removing part of the batch:
            # the relay is held before it marks the batch, a row of it is locked, then it goes.
            for locked in ("first", "last"):
                name = await relaying(database)
                await eventually(lambda: empty(database))
                async with gate.transaction():
                    await gate.execute("LOCK TABLE wsb_outbox_relay IN SHARE MODE")
                    ids = await add(blog, 3)
                    await eventually(lambda n=name: waiting_on_a_lock(database, n))
                    target = ids[0] if locked == "first" else ids[-1]
                    await rows_gate.execute("BEGIN")
                    await rows_gate.execute(
                        "SELECT 1 FROM wsb_outbox WHERE id = %s FOR UPDATE", [target]
                    )
                # The batch is now in flight, appended, and its removal waits on the row.
                await eventually(lambda s=seq: _in_stream(redis_server.url, s - 1))
                await eventually(lambda n=name: waiting_on_a_lock(database, n))
                killed_at = await kill(name)
                await rows_gate.execute("COMMIT")
                await taken_over(name, killed_at)

            # 4. Marked in flight, not yet appended: Redis stops answering.
            name = await relaying(database)
            await eventually(lambda: empty(database))
            await run_sync(redis_server.freeze)
            try:
                await add(blog, 3)
                await eventually(
                    lambda: _positive(database, "SELECT count(*) FROM wsb_outbox_relay")
                )
                killed_at = await kill(name)
            finally:
                await run_sync(redis_server.thaw)
            await taken_over(name, killed_at)

            # 5. The relay's connection is cut: a relay holds the lock again within 5 s.
            await relaying(database)
            cut = await holder(database, "a.pid")
            await gate.execute("SELECT pg_terminate_backend(%s)", [cut])
            cut_at = time.monotonic()

            async def held_anew() -> bool:
                return await holder(database, "a.pid") not in (None, cut)

            await eventually(held_anew, 10)
            takeovers.append(time.monotonic() - cut_at)
            await add(blog, 2)
            await eventually(lambda: empty(database), 20)
            assert await scalar(database, "SELECT count(*) FROM wsb_outbox_relay") == 0

        # Every row once, in id order, in the stream every instance serves.
        survivor = next(i for i in instances.values() if i.process.popen.poll() is None)
        await run_sync(survivor.process.wait_ready)
        async with websockets.connect(
            f"ws://127.0.0.1:{survivor.port}/ws?since={head}", open_timeout=10 * FACTOR
        ) as ws:
            messages = await receive_n(ws, seq, seconds=20)
        assert seqs(messages) == list(range(seq))
        head = orjson.loads(await run_sync(_get, survivor.port, "/events/head"))["id"]
        assert messages[-1]["id"] == head  # and nothing after them
        assert all(t < 5 for t in takeovers), takeovers
        # SIGTERM still ends the relaying instance and the standby with 0.
        for instance in instances.values():
            await run_sync(instance.process.wait_ready)
            assert await run_sync(instance.process.terminate) == 0
    finally:
        for instance in instances.values():
            instance.stop()
    # Steps 2, 3 and 4 left a batch in flight, and a new relay redid each.
    logs = "".join(i.output for i in instances.values())
    assert logs.count("redoing a batch") == 3, logs


def _get(port: int, path: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5 * FACTOR) as answer:
        body: bytes = answer.read()
        return body


async def _positive(url: str, query: str) -> bool:
    return bool(await scalar(url, query))


async def _in_stream(redis_url: str, wanted: int) -> bool:
    import redis.asyncio

    async with redis.asyncio.Redis.from_url(redis_url) as r:
        entries = await r.xrange("wsbroadcast:stream")
    return any(orjson.loads(f[b"event"])["data"].get("seq") == wanted for _, f in entries)


# --- Postgres down --------------------------------------------------------------------


async def test_postgres_stopped_for_5_s_under_load_catches_up_in_order_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = Cluster(free_port())
    password = "s3cret-outbox-pass"
    try:
        await run_sync(cluster.init)
        await run_sync(cluster.start)
        plain = cluster.url
        url = plain.replace("postgres@", f"postgres:{password}@")
        confirmed: list[int] = []
        unsure: set[int] = set()
        loading = True

        async def load() -> None:
            seq = 0
            conn: Conn | None = None
            while loading:
                try:
                    if conn is None or conn.closed:
                        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
                except psycopg.OperationalError:
                    await anyio.sleep(0.1)
                    continue
                try:
                    await insert(conn, row(seq))
                    confirmed.append(seq)
                except psycopg.OperationalError:
                    unsure.add(seq)  # the commit's outcome is unknown
                    await conn.close()
                seq += 1
                await anyio.sleep(0.01)  # the load's pace: 100 rows a second, at most
            if conn is not None:
                await conn.close()

        async with (
            running(outbox_url=url, client_buffer=10_000) as svc,
            websockets.connect(svc.ws_url(), max_queue=None, open_timeout=10 * FACTOR) as ws,
            anyio.create_task_group() as tasks,
        ):
            received: list[int] = []

            async def read() -> None:
                while True:
                    received.extend(seqs([await receive(ws, 60)]))

            await relaying(plain)
            tasks.start_soon(read)
            tasks.start_soon(load)
            await eventually(lambda: _count_at_least(received, 20))
            # Hold the relay back (it cannot mark a batch) so that rows wait when Postgres goes.
            gate = await psycopg.AsyncConnection.connect(plain, autocommit=True)
            await gate.execute("BEGIN")
            await gate.execute("LOCK TABLE wsb_outbox_relay IN SHARE MODE")
            held = len(confirmed)
            await eventually(lambda: _count_at_least(confirmed, held + 20))
            caplog.clear()
            down_at = time.monotonic()
            await run_sync(cluster.stop)
            await gate.close()
            # Committed, not yet published. (Not `<= held`: a row can commit, be relayed and
            # arrive before the load has noted its commit.)
            assert len(received) < len(confirmed)

            async def down() -> bool:
                return "wsb_outbox_up 0.0" in await svc.metrics()

            await eventually(down)
            # The HTTP API goes on.
            assert (await svc.http.post("/events", json=notice("still here"))).status_code == 202
            assert (await svc.http.get("/healthz")).status_code == 200
            await anyio.sleep(max(0.0, 5 - (time.monotonic() - down_at)))  # the outage: 5 s
            await run_sync(cluster.start)
            before = len(confirmed)
            await eventually(lambda: _count_at_least(confirmed, before + 20), 20)
            loading = False
            await eventually(lambda: _count_at_least(received, len(confirmed)), 30)
            # Nothing more comes: every row went out exactly once.
            await eventually(lambda: empty(plain))
            assert "wsb_outbox_up 1.0" in await svc.metrics()
            tasks.cancel_scope.cancel()
        assert received == sorted(set(received)), "out of order or repeated"
        assert set(confirmed) <= set(received) <= set(confirmed) | unsure
        outbox_logs = [r for r in caplog.records if r.name == "wsbroadcast.outbox"]
        unreachable = [r for r in outbox_logs if "unreachable" in r.getMessage()]
        assert len(unreachable) == 1, [r.getMessage() for r in outbox_logs]
        assert all(password not in r.getMessage() for r in caplog.records)
        assert "***" in unreachable[0].getMessage()
    finally:
        await run_sync(cluster.remove)


async def test_the_service_starts_and_serves_while_postgres_is_unreachable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"postgresql://blog:hunter2@127.0.0.1:{free_port()}/blog"  # nothing listens there
    async with running(outbox_url=url) as svc, svc.subscribe() as ws:

        async def down() -> bool:
            return "wsb_outbox_up 0.0" in await svc.metrics()

        await eventually(down)
        ids = await svc.publish(notice("no Postgres, still serving"))
        assert (await receive(ws))["id"] == ids[0]
        assert (await svc.http.get("/readyz")).status_code == 200  # readiness is the broker's
    logged = [r.getMessage() for r in caplog.records if r.name == "wsbroadcast.outbox"]
    assert len(logged) == 1 and "unreachable" in logged[0], logged
    assert "blog:***@127.0.0.1" in logged[0]
    assert all("hunter2" not in r.getMessage() for r in caplog.records)


async def _count_at_least(items: list[int], count: int) -> bool:
    return len(items) >= count


# --- the setting ----------------------------------------------------------------------


def test_the_outbox_url_setting_refuses_other_schemes_without_showing_the_password() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings([], {"WSB_OUTBOX_URL": "mysql://blog:hunter2@db/blog"}, env_file=None)
    assert str(refused.value).startswith("WSB_OUTBOX_URL: ")
    assert "hunter2" not in str(refused.value)
    settings = load_settings(
        [], {"WSB_OUTBOX_URL": "postgresql://blog:hunter2@db/blog"}, env_file=None
    )
    assert settings.outbox_url == "postgresql://blog:hunter2@db/blog"
    assert "hunter2" in settings.secrets()  # so every log line hides it
    assert load_settings(
        [], {"WSB_OUTBOX_URL": "postgresql://db/blog?user=blog&password=s3cret"}, env_file=None
    ).secrets() == ("s3cret",)
    assert load_settings([], {"WSB_OUTBOX_URL": ""}, env_file=None).outbox_url is None


def test_the_docs_give_the_ddl_the_service_runs() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "outbox.md").read_text()
    assert " ".join(SCHEMA.split()) in " ".join(docs.split())


def test_a_logged_url_hides_its_password() -> None:
    assert hide_password("postgresql://blog:hunter2@db:5432/blog") == (
        "postgresql://blog:***@db:5432/blog"
    )
    assert hide_password("postgresql://db/blog?user=u&password=hunter2") == (
        "postgresql://db/blog?user=u&password=***"
    )
    assert hide_password("postgresql://db/blog") == "postgresql://db/blog"
