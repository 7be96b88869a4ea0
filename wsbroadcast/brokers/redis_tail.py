"""The Redis broker's tail: this instance's one reader of the stream, feeding its hub.

It reaches Redis only through `TailSource`, the small surface `RedisBroker` offers it.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from typing import Protocol

import anyio
import orjson
from redis.exceptions import RedisError

from ..events import MAX_BATCH, Event
from . import NewEpoch
from .redis_scripts import entry, event, stream_id

logger = logging.getLogger("wsbroadcast.redis")

BLOCK_MS = 2000  # one blocking read; a quiet tail checks the epoch this often
READ_COUNT = 2 * MAX_BATCH  # entries per read: always at least one whole batch
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 2.0  # the tail's reconnect delays, jittered

Entries = list[tuple[bytes, dict[bytes, bytes]]]  # (entry id, fields), as XREAD gives them


class TailSource(Protocol):
    """What the tail needs of the broker; every call is on the tail's own connection."""

    async def tail_look(self) -> tuple[str, str]:
        """The epoch (created if there is none) and the stream's last id."""
        ...

    async def tail_read(self, after: str, count: int, block_ms: int) -> Entries:
        """Up to `count` entries after the stream id `after`, waiting up to `block_ms`
        for one; empty when none came."""
        ...

    def tail_started(self) -> None:
        """The tail knows where it starts reading: publishing may go ahead."""
        ...

    def tail_reading(self, ok: bool) -> None:
        """Whether the tail's last command succeeded (the broker's readiness)."""
        ...


class Tail:
    """Blocking reads from the last id seen; reconnects with backoff; never raises for Redis.

    Hands on each read's whole batches together, in stream order, and `NewEpoch` when the
    stream was lost or entries were removed before this instance read them (its
    subscribers get a `resync`).
    """

    def __init__(self, source: TailSource) -> None:
        self._source = source
        self._out: deque[list[Event] | NewEpoch] = deque()
        self._epoch: str | None = None  # None until the first look at Redis
        self._last = "0-0"  # the stream id of the last entry handed on
        self._verify = True  # look at the epoch before the next read
        self._suspect: str | None = None  # an entry of another epoch, met once
        self._failures = 0

    def __aiter__(self) -> Tail:
        return self

    async def __anext__(self) -> list[Event] | NewEpoch:
        while not self._out:
            try:
                if self._verify:
                    await self._look()
                else:
                    await self._read()
            except (RedisError, OSError) as exc:
                await self._back_off(exc)
                continue
            except Exception as exc:  # the broadcaster must never stop: retry, loudly
                logger.exception("reading the stream failed")
                await self._back_off(exc)
                continue
            if self._failures:
                logger.info("Redis is back; reading on from %s:%s", self._epoch, self._last)
                self._failures = 0
        return self._out.popleft()

    async def _look(self) -> None:
        epoch, last = await self._source.tail_look()
        if self._epoch is None:
            self._epoch, self._last = epoch, last
            self._source.tail_started()
        elif epoch != self._epoch:
            # Flushed, deleted or replaced: what follows is a new stream, read from its start.
            logger.warning("the stream's epoch changed from %s to %s", self._epoch, epoch)
            self._epoch, self._last = epoch, "0-0"
            self._announce(f"{epoch}:0-0")
        elif stream_id(last) < stream_id(self._last):
            # Same epoch but an older stream (restored from an older snapshot): events
            # handed on since are gone from history.
            logger.warning("the stream went back from %s to %s", self._last, last)
            self._last = last
            self._announce(f"{epoch}:{last}")
        self._verify = False
        self._source.tail_reading(True)

    async def _read(self) -> None:
        entries = await self._source.tail_read(self._last, READ_COUNT, BLOCK_MS)
        self._source.tail_reading(True)
        if not entries:
            self._verify = True  # quiet: was the stream lost meanwhile?
            return
        if len(entries) == READ_COUNT:
            # Cut by COUNT: keep back the last batch's start until its end is read too.
            while entries and entries[-1][1].get(b"left", b"0") != b"0":
                entries.pop()
        batch: list[Event] = []
        for entry_id, fields in entries:
            try:
                read = entry(entry_id, fields)
            except (KeyError, ValueError):
                logger.error("skipping stream entry %s: not written by wsbroadcast", entry_id)
                self._last = entry_id.decode()
                continue
            if read.epoch != self._epoch and read.id != self._suspect:
                self._suspect = read.id
                self._verify = True  # the stream was replaced under us?
                break
            if read.epoch != self._epoch:  # no: the epoch stands, the entry is foreign
                logger.error("skipping stream entry %s: of another epoch", read.id)
                self._last = read.id
                continue
            if read.prev > stream_id(self._last):
                # Entries between were removed before this instance read them.
                if batch:
                    self._out.append(batch)
                    batch = []
                self._announce(f"{self._epoch}:{read.prev[0]}-{read.prev[1]}")
            try:
                batch.append(event(read.epoch, read))
            except (KeyError, TypeError, orjson.JSONDecodeError):
                logger.error("skipping stream entry %s: its event cannot be read", read.id)
            self._last = read.id
        # What one read took goes on together, as the embedded broker hands on all that
        # waits: the hub writes each subscriber's share of it in one write.
        if batch:
            self._out.append(batch)

    def _announce(self, head: str) -> None:
        if self._out and isinstance(self._out[-1], NewEpoch):
            self._out[-1] = NewEpoch(head)
        else:
            self._out.append(NewEpoch(head))

    async def _back_off(self, exc: BaseException) -> None:
        self._source.tail_reading(False)
        if not self._failures:
            logger.warning("lost Redis (%s); reconnecting from %s:%s", exc, self._epoch, self._last)
        self._failures += 1
        self._verify = True  # Redis may have come back empty
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(self._failures - 1, 10))
        await anyio.sleep(delay * random.uniform(0.5, 1.0))
