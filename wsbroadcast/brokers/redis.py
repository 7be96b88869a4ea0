"""The Redis broker: one Redis Stream shared by every instance, read by each for its own hub.

Scripts in `redis_scripts`, the reader in `redis_tail`; keys, epoch and outages: docs/redis.md.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import orjson
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..errors import Unavailable
from ..events import Draft, Event, Position
from . import IDEMPOTENCY_SECONDS, Appended, NewEpoch, Recent, SharedCounts
from .redis_counts import RedisCounts
from .redis_scripts import (
    APPEND_SCRIPT,
    HEAD_SCRIPT,
    READ_BEFORE_SCRIPT,
    READ_SCRIPT,
    entry,
    event,
    fields,
    stream_id,
)
from .redis_tail import BLOCK_MS, Entries, Tail

logger = logging.getLogger("wsbroadcast.redis")

STREAM = "wsbroadcast:stream"
EPOCH = "wsbroadcast:epoch"  # the stream's epoch, valid only while the stream exists
KEY_PREFIX = "wsbroadcast:idempotency:"
CONNECT_SECONDS = 1.0  # give up connecting after this: an unreachable host fails fast
COMMAND_SECONDS = 1.5  # one publish, head or resume read, all in: 503 within 2 s
LATE_SECONDS = 0.3  # a publish still queued in Redis this close to its deadline appends nothing
POOL_SIZE = 64  # connections for publishing, resume and head; more publishers wait for one


class RedisBroker:
    def __init__(self, url: str, history_size: int, history_ttl: float = 0.0) -> None:
        self._history_size = history_size
        self._ttl_ms = round(history_ttl * 1000)  # 0: no age limit
        self._redis = Redis.from_pool(
            BlockingConnectionPool.from_url(
                url,
                max_connections=POOL_SIZE,
                timeout=COMMAND_SECONDS,
                socket_connect_timeout=CONNECT_SECONDS,
                socket_timeout=COMMAND_SECONDS,
                retry=Retry(NoBackoff(), 0),  # no retry loops: the caller answers 503
                protocol=2,  # RESP2: replies of the scripts and XREAD as plain arrays
            )
        )
        # The tail's own connection: its blocking reads outlast a command's timeout.
        self._reader = Redis.from_pool(
            ConnectionPool.from_url(
                url,
                socket_connect_timeout=CONNECT_SECONDS,
                socket_timeout=BLOCK_MS / 1000 + 2 * CONNECT_SECONDS,
                retry=Retry(NoBackoff(), 0),
                protocol=2,
            )
        )
        self._head = self._redis.register_script(HEAD_SCRIPT)
        self._append = self._redis.register_script(APPEND_SCRIPT)
        self._read = self._redis.register_script(READ_SCRIPT)
        self._read_before = self._redis.register_script(READ_BEFORE_SCRIPT)
        self._counts = RedisCounts(self._redis)
        self._begun = anyio.Event()  # the tail knows where it starts reading
        self._reading = False  # the tail's last command succeeded
        # Redis's clock minus our monotonic one, in seconds: deadlines in Redis's terms.
        self._clock_offset: float | None = None

    async def seen(self, key: str) -> list[str] | None:
        async with _bounded("publish"):
            joined = await self._redis.get(KEY_PREFIX + key)
        if not joined:
            return None
        return (joined.decode() if isinstance(joined, bytes) else joined).split(" ")

    async def append(self, drafts: Sequence[Draft], key: str | None = None) -> Appended:
        blobs = [
            orjson.dumps({"type": d.type, "data": d.data, "timestamp": d.timestamp}) for d in drafts
        ]
        keys = [STREAM, EPOCH] if key is None else [STREAM, EPOCH, KEY_PREFIX + key]
        # Past its deadline a publish answers 503, and a script Redis runs after it (say,
        # once a stalled Redis resumes) appends nothing: no 503'd event ever appears.
        deadline = time.monotonic() + COMMAND_SECONDS - LATE_SECONDS
        args: list[str | int | bytes] = [
            secrets.token_hex(4),
            self._history_size,
            int(IDEMPOTENCY_SECONDS),
        ]
        ttl = self._ttl_ms
        async with _bounded("publish"):
            await self._await_tail()
            late = 0 if self._clock_offset is None else deadline + self._clock_offset
            sent = time.monotonic()
            reply = await self._append(keys=keys, args=[*args, int(late * 1e6), ttl, *blobs])
        status, joined, seconds, micros = (item.decode() for item in reply)
        self._learn_clock(sent, time.monotonic(), seconds, micros)
        if status == "late":
            raise Unavailable("Redis did not answer in time; retry shortly")
        return Appended(joined.split(" "), repeated=status == "repeat")

    async def read_after(self, position: Position, limit: int) -> list[Event] | None:
        since = f"{position.ms}-{position.seq}"
        async with _bounded("resume"):
            await self._await_tail()
            args: list[str | int] = [position.epoch, since, limit, self._ttl_ms]
            reply = await self._read(keys=[STREAM, EPOCH], args=args)
        if not reply:
            return None  # another epoch, or the stream is gone
        last, deleted = stream_id(reply[0]), stream_id(reply[1])
        floor = stream_id(reply[2]) if reply[2] else last
        here = position.place
        # Resumable when nothing after `since` was ever removed: trimming removes the
        # oldest entries, so `since` must be an entry still kept, or the id just before
        # the oldest kept one (the floor), or the last id; and nothing newer deleted.
        if here > last or here < deleted:
            return None
        if reply[5] and here < stream_id(reply[5]):
            return None  # what came after `since` is past the age limit
        if not (reply[3] or here == floor or here == last):
            return None
        return [event(position.epoch, entry(i, fields(f))) for i, f in reply[4]]

    async def read_before(self, before: Position | None, limit: int) -> Recent | None:
        args: list[str | int] = [
            secrets.token_hex(4),
            "" if before is None else before.epoch,
            "" if before is None else f"{before.ms}-{before.seq}",
            limit,
            self._ttl_ms,
        ]
        async with _bounded("rewind"):
            await self._await_tail()
            reply = await self._read_before(keys=[STREAM, EPOCH], args=args)
        if not reply:
            return None  # the stream was lost between two reads
        epoch = reply[0].decode()
        last = stream_id(reply[1])
        found = [event(epoch, entry(i, fields(f))) for i, f in reversed(reply[2])]
        return Recent(found, Position(epoch, *last))

    def shared_counts(self) -> SharedCounts | None:
        return self._counts

    def tail(self) -> AsyncIterator[list[Event] | NewEpoch]:
        return Tail(self)

    async def head(self) -> str:
        async with _bounded("head"):
            epoch, last = await self._look(self._redis)
        return f"{epoch}:{last}"

    async def ready(self) -> bool:
        if not self._reading:
            return False  # this instance's subscribers would get nothing
        try:
            with anyio.fail_after(CONNECT_SECONDS):
                await self._redis.ping()
        except (RedisError, OSError):
            return False
        return True

    async def aclose(self) -> None:
        for client in (self._redis, self._reader):
            # Closing waits for unsent bytes, which a stalled Redis never takes.
            with anyio.move_on_after(CONNECT_SECONDS, shield=True):
                await client.aclose()

    # What the tail uses (`redis_tail.TailSource`): its own connection and its state.

    async def tail_look(self) -> tuple[str, str]:
        return await self._look(self._reader)

    async def tail_read(self, after: str, count: int, block_ms: int) -> Entries:
        reply: Any = await self._reader.xread({STREAM: after}, count=count, block=block_ms)
        return reply[0][1] if reply else []

    def tail_started(self) -> None:
        self._begun.set()

    def tail_reading(self, ok: bool) -> None:
        self._reading = ok

    async def _look(self, client: Redis) -> tuple[str, str]:
        """The epoch (created if there is none) and the last id; learns Redis's clock."""
        sent = time.monotonic()
        reply = await self._head(keys=[STREAM, EPOCH], args=[secrets.token_hex(4)], client=client)
        epoch, last, seconds, micros = (item.decode() for item in reply)
        self._learn_clock(sent, time.monotonic(), seconds, micros)
        return epoch, last

    def _learn_clock(self, sent: float, received: float, seconds: str, micros: str) -> None:
        # Only quick round trips: the reading is then within a few ms of the truth. Each
        # reply re-learns it, so a clock that steps is followed within one command.
        if self._clock_offset is None or received - sent < 0.05:
            self._clock_offset = int(seconds) + int(micros) / 1e6 - (sent + received) / 2

    async def _await_tail(self) -> None:
        # An event appended before this instance's tail knows where it starts could be
        # missed by it; the tail fixes its start on its first look at Redis.
        if not self._begun.is_set():
            await self._begun.wait()


@asynccontextmanager
async def _bounded(what: str) -> AsyncIterator[None]:
    """Run Redis commands within COMMAND_SECONDS; any failure is `Unavailable`."""
    try:
        with anyio.fail_after(COMMAND_SECONDS):
            yield
    except TimeoutError:
        logger.debug("%s: Redis did not answer within %s s", what, COMMAND_SECONDS)
        raise Unavailable("Redis did not answer in time; retry shortly") from None
    except (RedisError, OSError) as exc:
        logger.debug("%s: Redis failed: %s", what, exc)
        raise Unavailable("the broker is unreachable; retry shortly") from None
