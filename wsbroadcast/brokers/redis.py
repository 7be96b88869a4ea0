"""The Redis broker: one Redis Stream shared by every instance, read by each for its own hub.

Keys, the epoch, resume and outage handling are described in docs/redis.md.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import anyio
import orjson
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..errors import Unavailable
from ..events import MAX_BATCH, Draft, Event, Position, make_event
from . import IDEMPOTENCY_SECONDS, Appended, NewEpoch

logger = logging.getLogger("wsbroadcast.redis")

STREAM = "wsbroadcast:stream"
EPOCH = "wsbroadcast:epoch"  # the stream's epoch, valid only while the stream exists
KEY_PREFIX = "wsbroadcast:idempotency:"
CONNECT_SECONDS = 1.0  # give up connecting after this: an unreachable host fails fast
COMMAND_SECONDS = 1.5  # one publish, head or resume read, all in: 503 within 2 s
LATE_SECONDS = 0.3  # a publish still queued in Redis this close to its deadline appends nothing
BLOCK_MS = 2000  # one blocking read; a quiet tail checks the epoch this often
READ_COUNT = 2 * MAX_BATCH  # entries per read: always at least one whole batch
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 2.0  # the tail's reconnect delays, jittered
POOL_SIZE = 64  # connections for publishing, resume and head; more publishers wait for one

# Lua shared by the scripts. The epoch is valid only while its stream exists: a deleted
# stream or a flushed Redis gets a new epoch with a new, empty stream (a consumer group is
# how Redis makes an empty stream; nothing reads from the group).
_LUA = """
local function info(stream)
  local raw = redis.call('XINFO', 'STREAM', stream)
  local out = {}
  for i = 1, #raw, 2 do out[raw[i]] = raw[i + 1] end
  return out
end

local function ensure(stream, epoch_key, fresh)
  local epoch = redis.call('GET', epoch_key)
  if epoch and redis.call('EXISTS', stream) == 1 then return epoch end
  redis.call('DEL', stream)
  redis.call('SET', epoch_key, fresh)
  redis.call('XGROUP', 'CREATE', stream, 'wsbroadcast', '$', 'MKSTREAM')
  return fresh
end
"""

# KEYS: stream, epoch. ARGV: an epoch to create if there is none.
# The epoch, the stream's last id, and Redis's clock (seconds, microseconds).
HEAD_SCRIPT = (
    "#!lua flags=allow-oom\n"
    + _LUA
    + """
local epoch = ensure(KEYS[1], KEYS[2], ARGV[1])
local now = redis.call('TIME')
return {epoch, info(KEYS[1])['last-generated-id'], now[1], now[2]}
"""
)

# KEYS: stream, epoch, and the idempotency key if there is one.
# ARGV: an epoch to create if there is none, history size, key seconds, deadline in
# microseconds of Redis's clock (0: none), then one JSON event per entry.
# Each entry holds its epoch, the id before it (so a reader sees any gap) and how many
# entries of its batch come after it (so a reader hands on whole batches).
# Returns {status, ids joined by spaces, Redis's clock}: status is new, repeat or late.
APPEND_SCRIPT = (
    "#!lua\n"
    + _LUA
    + """
local now = redis.call('TIME')
if KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  if seen then return {'repeat', seen, now[1], now[2]} end
end
local deadline = tonumber(ARGV[4])
if deadline > 0 and tonumber(now[1]) * 1000000 + tonumber(now[2]) > deadline then
  return {'late', '', now[1], now[2]}
end
local epoch = ensure(KEYS[1], KEYS[2], ARGV[1])
local prev = info(KEYS[1])['last-generated-id']
local ids = {}
for i = 5, #ARGV do
  prev = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
    'epoch', epoch, 'prev', prev, 'left', #ARGV - i, 'event', ARGV[i])
  ids[#ids + 1] = epoch .. ':' .. prev
end
local joined = table.concat(ids, ' ')
if KEYS[3] then redis.call('SET', KEYS[3], joined, 'EX', ARGV[3]) end
return {'new', joined, now[1], now[2]}
"""
)

# KEYS: stream, epoch. ARGV: epoch, since (ms-seq), limit.
# {} when the epoch is not the stream's; else the stream's last id, the newest id deleted
# from it, the id before its first entry ('' when empty), whether `since` is an entry, and
# up to `limit` entries after `since`.
READ_SCRIPT = (
    "#!lua flags=no-writes,allow-oom\n"
    + _LUA
    + """
if redis.call('GET', KEYS[2]) ~= ARGV[1] or redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
local s = info(KEYS[1])
local floor = ''
if s['first-entry'] then
  local fields = s['first-entry'][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'prev' then floor = fields[i + 1] end
  end
end
local here = #redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local after = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', ARGV[3])
return {s['last-generated-id'], s['max-deleted-entry-id'], floor, here, after}
"""
)

Place = tuple[int, int]


class _Entry(NamedTuple):
    id: str  # the stream entry id, ms-seq
    epoch: str
    prev: Place
    left: int  # entries of the same batch after this one
    body: bytes


def _place(raw: bytes | str) -> Place:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


def _entry(entry_id: bytes, fields: Mapping[bytes, bytes]) -> _Entry:
    return _Entry(
        entry_id.decode(),
        fields[b"epoch"].decode(),
        _place(fields[b"prev"]),
        int(fields[b"left"]),
        fields[b"event"],
    )


def _event(epoch: str, entry: _Entry) -> Event:
    body = orjson.loads(entry.body)
    ms, seq = _place(entry.id)
    draft = Draft(type=body["type"], data=body["data"], timestamp=body["timestamp"])
    return make_event(draft, Position(epoch, ms, seq))


def _fields(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisBroker:
    def __init__(self, url: str, history_size: int) -> None:
        self._history_size = history_size
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
        async with _bounded("publish"):
            await self._await_tail()
            late = 0 if self._clock_offset is None else deadline + self._clock_offset
            sent = time.monotonic()
            reply = await self._append(keys=keys, args=[*args, int(late * 1e6), *blobs])
        status, joined, seconds, micros = (item.decode() for item in reply)
        self._learn_clock(sent, time.monotonic(), seconds, micros)
        if status == "late":
            raise Unavailable("Redis did not answer in time; retry shortly")
        return Appended(joined.split(" "), repeated=status == "repeat")

    async def read_after(self, position: Position, limit: int) -> list[Event] | None:
        since = f"{position.ms}-{position.seq}"
        async with _bounded("resume"):
            await self._await_tail()
            reply = await self._read(keys=[STREAM, EPOCH], args=[position.epoch, since, limit])
        if not reply:
            return None  # another epoch, or the stream is gone
        last, deleted = _place(reply[0]), _place(reply[1])
        floor = _place(reply[2]) if reply[2] else last
        here = position.place
        # Resumable when nothing after `since` was ever removed: trimming removes the
        # oldest entries, so `since` must be an entry still kept, or the id just before
        # the oldest kept one (the floor), or the last id; and nothing newer deleted.
        if here > last or here < deleted:
            return None
        if not (reply[3] or here == floor or here == last):
            return None
        return [_event(position.epoch, _entry(i, _fields(f))) for i, f in reply[4]]

    def tail(self) -> AsyncIterator[list[Event] | NewEpoch]:
        return _Tail(self)

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


class _Tail:
    """Blocking reads from the last id seen; reconnects with backoff; never raises for Redis.

    Hands on whole batches in stream order, and `NewEpoch` when the stream was lost or
    entries were removed before this instance read them (its subscribers get a `resync`).
    """

    def __init__(self, broker: RedisBroker) -> None:
        self._broker = broker
        self._out: deque[list[Event] | NewEpoch] = deque()
        self._epoch: str | None = None  # None until the first look at Redis
        self._last = "0-0"  # the stream id of the last entry handed on
        self._verify = True  # look at the epoch before the next read
        self._suspect: str | None = None  # an entry of another epoch, met once
        self._failures = 0

    def __aiter__(self) -> _Tail:
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
        epoch, last = await self._broker._look(self._broker._reader)
        if self._epoch is None:
            self._epoch, self._last = epoch, last
            self._broker._begun.set()
        elif epoch != self._epoch:
            # Flushed, deleted or replaced: what follows is a new stream, read from its start.
            logger.warning("the stream's epoch changed from %s to %s", self._epoch, epoch)
            self._epoch, self._last = epoch, "0-0"
            self._announce(f"{epoch}:0-0")
        elif _place(last) < _place(self._last):
            # Same epoch but an older stream (restored from an older snapshot): events
            # handed on since are gone from history.
            logger.warning("the stream went back from %s to %s", self._last, last)
            self._last = last
            self._announce(f"{epoch}:{last}")
        self._verify = False
        self._broker._reading = True

    async def _read(self) -> None:
        reply: Any = await self._broker._reader.xread(
            {STREAM: self._last}, count=READ_COUNT, block=BLOCK_MS
        )
        self._broker._reading = True
        if not reply:
            self._verify = True  # quiet: was the stream lost meanwhile?
            return
        entries: list[tuple[bytes, dict[bytes, bytes]]] = reply[0][1]
        if len(entries) == READ_COUNT:
            # Cut by COUNT: keep back the last batch's start until its end is read too.
            while entries and entries[-1][1].get(b"left", b"0") != b"0":
                entries.pop()
        batch: list[Event] = []
        for entry_id, fields in entries:
            try:
                entry = _entry(entry_id, fields)
            except (KeyError, ValueError):
                logger.error("skipping stream entry %s: not written by wsbroadcast", entry_id)
                self._last = entry_id.decode()
                continue
            if entry.epoch != self._epoch and entry.id != self._suspect:
                self._suspect = entry.id
                self._verify = True  # the stream was replaced under us?
                break
            if entry.epoch != self._epoch:  # no: the epoch stands, the entry is foreign
                logger.error("skipping stream entry %s: of another epoch", entry.id)
                self._last = entry.id
                continue
            if entry.prev > _place(self._last):
                # Entries between were removed before this instance read them.
                if batch:
                    self._out.append(batch)
                    batch = []
                self._announce(f"{self._epoch}:{entry.prev[0]}-{entry.prev[1]}")
            try:
                batch.append(_event(entry.epoch, entry))
            except (KeyError, TypeError, orjson.JSONDecodeError):
                logger.error("skipping stream entry %s: its event cannot be read", entry.id)
            self._last = entry.id
            if entry.left == 0 and batch:
                self._out.append(batch)
                batch = []
        if batch:
            self._out.append(batch)

    def _announce(self, head: str) -> None:
        if self._out and isinstance(self._out[-1], NewEpoch):
            self._out[-1] = NewEpoch(head)
        else:
            self._out.append(NewEpoch(head))

    async def _back_off(self, exc: BaseException) -> None:
        self._broker._reading = False
        if not self._failures:
            logger.warning("lost Redis (%s); reconnecting from %s:%s", exc, self._epoch, self._last)
        self._failures += 1
        self._verify = True  # Redis may have come back empty
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(self._failures - 1, 10))
        await anyio.sleep(delay * random.uniform(0.5, 1.0))
