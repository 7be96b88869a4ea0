"""The Postgres outbox relay: publish what the blog's transactions committed to `wsb_outbox`.

One relay at a time (an advisory lock on its connection); each batch is written down as
in flight before it is appended with its own idempotency key, so a redo publishes nothing
twice. How and why: docs/outbox.md. psycopg is imported only when a URL is set.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import orjson
from anyio.abc import TaskStatus

from .errors import InvalidEvent, ServiceError, Unavailable
from .events import MAX_BATCH, Draft, format_timestamp, parse_event
from .hub import Hub
from .metrics import Metrics
from .outbox_schema import CHANNEL, RELAY_LOCK, WAKE_LOCK, ensure_schema
from .schemas import BUILTINS, EventTypes
from .settings import url_passwords

if TYPE_CHECKING:
    from psycopg import AsyncConnection

logger = logging.getLogger("wsbroadcast.outbox")

KEY_PREFIX = "wsb-outbox:"  # the broker's idempotency key for a batch: this + its nonce
POLL_SECONDS = 1.0  # a missed notification is found within this
BUSY_SECONDS = 0.005  # a relay that cannot wait yet (a commit is finishing) reads again after
STANDBY_SECONDS = 1.0  # a standby tries the lock this often: take-over well within 5 s
STEP_SECONDS = 10.0  # one round trip to Postgres, at most; past it the connection is dropped
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 2.0

# The row's age on Postgres's own clock: the lag metric holds across clock skew.
READ = """
SELECT id, type, data::text, "timestamp", created_at,
       extract(epoch FROM clock_timestamp() - created_at)::float8
FROM wsb_outbox {where} ORDER BY id LIMIT %s
"""

# One statement, so one transaction: bad rows to the dead table, and the batch in flight.
MARK = """
WITH moved AS (
    DELETE FROM wsb_outbox o USING unnest(%(dead)s::bigint[], %(errors)s::text[]) AS e(id, error)
    WHERE o.id = e.id
    RETURNING o.id, o.type, o.data, o."timestamp", o.created_at, e.error
), buried AS (
    INSERT INTO wsb_outbox_dead (id, type, data, "timestamp", created_at, error)
    SELECT * FROM moved
)
INSERT INTO wsb_outbox_relay (nonce, ids)
SELECT %(nonce)s, %(ids)s::bigint[] WHERE cardinality(%(ids)s::bigint[]) > 0
"""

REMOVE = """
WITH gone AS (DELETE FROM wsb_outbox WHERE id = ANY(%s))
DELETE FROM wsb_outbox_relay WHERE nonce = %s
"""


def hide_password(url: str) -> str:
    """The URL as it may be logged: any password replaced."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = "&".join(
        "password=***" if item.lower().startswith("password=") else item
        for item in parts.query.split("&")
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class Relay:
    """Relays `wsb_outbox` to the hub while this instance holds the relay lock."""

    def __init__(
        self,
        url: str,
        hub: Hub,
        metrics: Metrics,
        *,
        strict_types: bool,
        types: EventTypes = BUILTINS,
    ) -> None:
        self.url = url
        self.hub = hub
        self.metrics = metrics
        self.strict_types = strict_types
        self.types = types  # the blog's own types (WSB_EVENT_TYPES), checked as a POST's
        self._shown = hide_password(url)
        self._secrets = url_passwords(url)
        # Batches this process appended but has not yet seen removed: a redo of one after a
        # lost connection only removes it, however long Postgres was away (keys last 10 min).
        self._appended: set[str] = set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, wait for the lock, relay; on any failure reconnect with backoff. Never ends."""
        try:
            import psycopg
        except ImportError:  # the start fails with this line
            raise RuntimeError(
                "WSB_OUTBOX_URL needs psycopg: pip install 'wsbroadcast[postgres]'"
            ) from None
        task_status.started()
        failures = 0
        refused = ""
        while True:
            try:
                async with await self._connect() as conn:
                    self.metrics.outbox_up.set(1)
                    if failures:
                        logger.info("outbox: Postgres is back at %s", self._shown)
                    failures = 0
                    await ensure_schema(conn)
                    await self._lead(conn)
            except (psycopg.OperationalError, OSError, TimeoutError) as exc:
                self.metrics.outbox_up.set(0)
                if not failures:  # once per outage
                    logger.warning(
                        "outbox: Postgres at %s is unreachable (%s); retrying with backoff",
                        self._shown,
                        self._redact(exc),
                    )
                failures += 1
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(failures - 1, 10))
                await anyio.sleep(delay * random.uniform(0.5, 1.0))
            except psycopg.Error as exc:  # SQL refused: a missing right, a table of another shape
                self.metrics.outbox_up.set(0)
                problem = self._redact(exc)
                if problem != refused:  # once per problem
                    logger.error("outbox: Postgres refused the relay (%s); retrying", problem)
                refused = problem
                await anyio.sleep(BACKOFF_MAX)
            except Exception:  # a bug must not stop the service: log it, start over
                self.metrics.outbox_up.set(0)
                logger.exception("outbox: the relay failed; starting over")
                failures = 0
                await anyio.sleep(BACKOFF_MAX)

    def _redact(self, exc: BaseException) -> str:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def _connect(self) -> AsyncConnection[Any]:
        from psycopg import AsyncConnection

        with anyio.fail_after(STEP_SECONDS):
            # The URL's own application_name wins (the tests name each instance so).
            conn = await AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=int(STEP_SECONDS / 2)
            )
            try:
                if "application_name=" not in self.url:
                    await conn.execute("SET application_name = 'wsbroadcast'")
                # The server finds a relay that died or vanished, and frees its lock, within
                # seconds: a dead client socket is checked even while a query waits.
                await conn.execute(
                    "SET tcp_keepalives_idle = 2; SET tcp_keepalives_interval = 1;"
                    " SET tcp_keepalives_count = 2; SET client_connection_check_interval = 1000"
                )
            except BaseException:
                await conn.close()
                raise
        return conn

    async def _lead(self, conn: AsyncConnection[Any]) -> None:
        while True:  # standby until the lock is free: asking is how to wait on Postgres's lock
            if await self._ask(conn, "SELECT pg_try_advisory_lock(%s)", RELAY_LOCK):
                break
            await anyio.sleep(STANDBY_SECONDS * random.uniform(0.8, 1.0))
        logger.info("outbox: this instance relays wsb_outbox")
        await conn.execute(f"LISTEN {CHANNEL}")
        await self._redo(conn)
        while True:
            if await self._relay_batch(conn):
                continue
            # Empty: wait for a notification, holding WAKE_LOCK so that commits send one.
            if not await self._ask(conn, "SELECT pg_try_advisory_lock(%s)", WAKE_LOCK):
                await anyio.sleep(BUSY_SECONDS)  # a commit that sent none is finishing
                continue
            if not await self._relay_batch(conn):  # what committed before the lock
                # psycopg keeps notifications that come during queries: none is lost.
                async for _ in conn.notifies(timeout=POLL_SECONDS, stop_after=1):
                    pass  # ends by itself: breaking out would leave the connection's lock taken
            await self._ask(conn, "SELECT pg_advisory_unlock(%s)", WAKE_LOCK)

    async def _ask(self, conn: AsyncConnection[Any], query: str, key: int) -> bool:
        with anyio.fail_after(STEP_SECONDS):
            row = await (await conn.execute(query, [key])).fetchone()
        return bool(row and row[0])

    async def _redo(self, conn: AsyncConnection[Any]) -> None:
        """Finish a batch left in flight by a relay that died: the same rows, the same key."""
        with anyio.fail_after(STEP_SECONDS):
            flights = await (
                await conn.execute("SELECT nonce, ids FROM wsb_outbox_relay ORDER BY created_at")
            ).fetchall()
        for nonce, ids in flights:
            with anyio.fail_after(STEP_SECONDS):
                rows = await (
                    await conn.execute(READ.format(where="WHERE id = ANY(%s)"), [ids, len(ids)])
                ).fetchall()
            read_at = time.monotonic()
            drafts, good, ages, dead = self._validate(rows)
            if dead:
                await self._mark(conn, "", [], dead)
            logger.info("outbox: redoing a batch of %d rows left in flight", len(good))
            await self._publish(conn, nonce, drafts, good, ages, read_at)

    async def _relay_batch(self, conn: AsyncConnection[Any]) -> bool:
        """Read, validate, mark in flight, append, remove: False when the table was empty."""
        nonce = secrets.token_hex(12)
        with anyio.fail_after(STEP_SECONDS):
            # No transaction needed: only the relay, holding the lock, removes rows.
            rows = await (await conn.execute(READ.format(where=""), [MAX_BATCH])).fetchall()
        if not rows:
            return False
        read_at = time.monotonic()
        drafts, good, ages, dead = self._validate(rows)
        # Durable before the append: a redo finds exactly these rows and this key.
        await self._mark(conn, nonce, good, dead)
        if good:
            await self._publish(conn, nonce, drafts, good, ages, read_at)
        return True

    def _validate(
        self, rows: Sequence[tuple[Any, ...]]
    ) -> tuple[list[Draft], list[int], list[float], list[tuple[int, str]]]:
        drafts: list[Draft] = []
        good: list[int] = []
        ages: list[float] = []
        dead: list[tuple[int, str]] = []
        for row_id, kind, data, stamp, created_at, age in rows:
            try:
                draft = self._draft(kind, data, stamp or created_at)
            except ServiceError as exc:  # the event rules, as for a POST
                dead.append((row_id, exc.detail))
                continue
            drafts.append(draft)
            good.append(row_id)
            ages.append(age)
        return drafts, good, ages, dead

    def _draft(self, kind: str, data: str, stamp: Any) -> Draft:
        try:
            # orjson, as the broker encodes it: a number it cannot carry is the row's fault.
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(f"data: cannot be carried as JSON ({exc})") from None
        raw = {"type": kind, "data": parsed}
        # The row's own time when it names none: stable, so a redo builds the same event.
        return parse_event(
            raw, "", strict_types=self.strict_types, types=self.types, now=format_timestamp(stamp)
        )

    async def _mark(
        self, conn: AsyncConnection[Any], nonce: str, ids: list[int], dead: list[tuple[int, str]]
    ) -> None:
        dead_ids, errors = [i for i, _ in dead], [e for _, e in dead]
        with anyio.fail_after(STEP_SECONDS):
            await conn.execute(
                MARK, {"dead": dead_ids, "errors": errors, "nonce": nonce, "ids": ids}
            )
        self.metrics.outbox_dead.inc(len(dead))
        for row_id, error in dead:
            logger.warning("outbox: row %s moved to wsb_outbox_dead: %s", row_id, error)

    async def _publish(
        self,
        conn: AsyncConnection[Any],
        nonce: str,
        drafts: list[Draft],
        ids: list[int],
        ages: list[float],
        read_at: float,
    ) -> None:
        if drafts and nonce not in self._appended:
            failures = 0
            while True:
                try:
                    appended = await self.hub.publish(drafts, KEY_PREFIX + nonce)
                    break
                except Unavailable:
                    # The batch stays in flight; the same key makes the retry safe.
                    if not failures:
                        logger.warning("outbox: the broker is unavailable; retrying the batch")
                    failures += 1
                    await anyio.sleep(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(failures, 10)))
            self._appended.add(nonce)
            if not appended.repeated:
                self.metrics.outbox_relayed.inc(len(drafts))
                since_read = time.monotonic() - read_at
                for age in ages:
                    self.metrics.outbox_lag.observe(max(0.0, age + since_read))
        with anyio.fail_after(STEP_SECONDS):
            await conn.execute(REMOVE, [ids, nonce])  # the rows and the mark, together
        self._appended.discard(nonce)
