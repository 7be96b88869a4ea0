"""What the Redis broker keeps in Redis: the Lua scripts it runs, and reading back the
stream entries they write.

Keys, the epoch, resume and outage handling are described in docs/redis.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import orjson

from ..events import Draft, Event, Position, make_event

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

-- The oldest stream id an age limit of `ttl` ms keeps (`-` with none), by Redis's clock.
local function min_id(ttl)
  if ttl <= 0 then return '-' end
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - ttl
  return string.format('%.0f', ms) .. '-0'
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
# microseconds of Redis's clock (0: none), age limit in ms (0: none), then one JSON event
# per entry. Entries past the age limit are trimmed with the append, atomically.
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
for i = 6, #ARGV do
  prev = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
    'epoch', epoch, 'prev', prev, 'left', #ARGV - i, 'event', ARGV[i])
  ids[#ids + 1] = epoch .. ':' .. prev
end
local oldest = min_id(tonumber(ARGV[5]))
if oldest ~= '-' then redis.call('XTRIM', KEYS[1], 'MINID', '~', oldest) end
local joined = table.concat(ids, ' ')
if KEYS[3] then redis.call('SET', KEYS[3], joined, 'EX', ARGV[3]) end
return {'new', joined, now[1], now[2]}
"""
)

# KEYS: stream, epoch. ARGV: epoch, since (ms-seq), limit, age limit in ms (0: none).
# {} when the epoch is not the stream's; else the stream's last id, the newest id deleted
# from it, the id before its first entry ('' when empty), whether `since` is an entry, up
# to `limit` entries after `since`, and the newest entry past the age limit ('' if none):
# a quiet stream is trimmed by age only at the next append, so it counts as deleted.
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
local aged = ''
local oldest = min_id(tonumber(ARGV[4]))
if oldest ~= '-' then
  local old = redis.call('XREVRANGE', KEYS[1], '(' .. oldest, '-', 'COUNT', 1)
  if old[1] then aged = old[1][1] end
end
return {s['last-generated-id'], s['max-deleted-entry-id'], floor, here, after, aged}
"""
)

# KEYS: stream, epoch. ARGV: an epoch to create if there is none, the epoch expected (''
# when any), before (ms-seq, exclusive; '' for the newest), limit, age limit in ms (0: none).
# {} when the epoch is not the one expected; else the epoch, the stream's last id, and up
# to `limit` of the newest entries before `before` within the age limit, newest first.
READ_BEFORE_SCRIPT = (
    "#!lua flags=allow-oom\n"
    + _LUA
    + """
local epoch = ensure(KEYS[1], KEYS[2], ARGV[1])
if ARGV[2] ~= '' and ARGV[2] ~= epoch then return {} end
local last = info(KEYS[1])['last-generated-id']
local high = '+'
if ARGV[3] ~= '' then high = '(' .. ARGV[3] end
local entries = redis.call('XREVRANGE', KEYS[1], high, min_id(tonumber(ARGV[5])),
  'COUNT', ARGV[4])
return {epoch, last, entries}
"""
)

StreamId = tuple[int, int]  # a stream entry id, ms-seq, in the order Redis keeps


class Entry(NamedTuple):
    """One stream entry as `APPEND_SCRIPT` writes it."""

    id: str  # the stream entry id, ms-seq
    epoch: str
    prev: StreamId
    left: int  # entries of the same batch after this one
    body: bytes


def stream_id(raw: bytes | str) -> StreamId:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


def entry(entry_id: bytes, fields: Mapping[bytes, bytes]) -> Entry:
    """Raises KeyError or ValueError for an entry wsbroadcast did not write."""
    return Entry(
        entry_id.decode(),
        fields[b"epoch"].decode(),
        stream_id(fields[b"prev"]),
        int(fields[b"left"]),
        fields[b"event"],
    )


def event(epoch: str, entry: Entry) -> Event:
    """Raises KeyError, TypeError or orjson.JSONDecodeError for a body that is no event."""
    body = orjson.loads(entry.body)
    ms, seq = stream_id(entry.id)
    draft = Draft(type=body["type"], data=body["data"], timestamp=body["timestamp"])
    return make_event(draft, Position(epoch, ms, seq))


def fields(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    """An entry's fields from the flat list XRANGE gives inside a script's reply."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
