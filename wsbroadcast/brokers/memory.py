"""The embedded broker: one process, history in a ring buffer, a new epoch at each start.

Memory is bounded by bytes as well as by count: history by `history_bytes`, events
waiting for the hub by `backlog_bytes`, idempotency keys by KEY_BYTES. With an age limit
(`history_ttl`), events older than it leave the front of the ring, at appends and reads.
"""

from __future__ import annotations

import secrets
import time
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from itertools import islice

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..errors import Unavailable
from ..events import MAX_BATCH, Draft, Event, Position, make_event
from . import IDEMPOTENCY_SECONDS, Appended, NewEpoch, Recent, SharedCounts

MAX_KEYS = 100_000  # idempotency keys kept at most; the oldest go first
KEY_BYTES = 32 << 20  # and their answers' bytes at most (a 500-event batch's: about 3 KB)
BACKLOG = 1024  # batches waiting for the hub before publishing answers 503
# Events the hub takes from the backlog at once, at most (and one batch). The hub bounds
# what one subscriber gets at once (a run's share), so this only bounds the lists: a POST
# for 100 posts holds one event for each, and ten of them must not end a run.
TAKE = 10 * MAX_BATCH
EVENT_OVERHEAD = 300  # bytes an event costs beside its JSON (its objects)


def cost(event: Event) -> int:
    """The bytes an event holds in memory, near enough: its frame, and its data parsed."""
    return 2 * len(event.ws_frame) + EVENT_OVERHEAD


class MemoryBroker:
    def __init__(
        self,
        history_size: int,
        history_bytes: int = 64 << 20,
        backlog_bytes: int = 32 << 20,
        history_ttl: float = 0.0,
    ) -> None:
        self.epoch = secrets.token_hex(4)
        self._ttl_ms = round(history_ttl * 1000)  # 0: no age limit
        self._history: deque[Event] = deque()
        self._history_size = history_size
        self._history_bytes = history_bytes
        self._held = 0  # bytes of history
        self._backlog_bytes = backlog_bytes
        self._waiting = 0  # bytes appended that the hub has not taken yet
        # The position just before the oldest event kept: a `since` there misses nothing.
        self._floor = Position(self.epoch, 0, 0)
        self._last = self._floor
        self._keys: OrderedDict[str, tuple[float, str]] = OrderedDict()  # -> (expires, ids)
        self._key_bytes = 0
        self._live: tuple[
            MemoryObjectSendStream[list[Event] | NewEpoch],
            MemoryObjectReceiveStream[list[Event] | NewEpoch],
        ] = anyio.create_memory_object_stream[list[Event] | NewEpoch](BACKLOG)

    async def seen(self, key: str) -> list[str] | None:
        self._forget_keys(time.monotonic())
        found = self._keys.get(key)
        return self._unpack(found[1]) if found is not None else None

    async def append(self, drafts: Sequence[Draft], key: str | None = None) -> Appended:
        # No await below: check, append and hand-off happen as one step.
        now = time.monotonic()
        if key is not None:
            self._forget_keys(now)
            if (seen := self._keys.get(key)) is not None:
                return Appended(self._unpack(seen[1]), repeated=True)
        sender = self._live[0]
        if sender.statistics().current_buffer_used >= BACKLOG:
            raise Unavailable("the hub is saturated; retry shortly")
        last = self._last
        events = [make_event(draft, self._next_position()) for draft in drafts]
        size = sum(map(cost, events))
        if self._waiting and self._waiting + size > self._backlog_bytes:
            self._last = last  # nothing was published: the positions are free again
            raise Unavailable("the hub is saturated; retry shortly")
        for event in events:
            self._keep(event)
        self._expire()
        self._waiting += size
        sender.send_nowait(events)
        ids = [event.id or "" for event in events]
        if key is not None:
            self._remember(key, now, events)
        return Appended(ids)

    def _keep(self, event: Event) -> None:
        history = self._history
        history.append(event)
        self._held += cost(event)
        while len(history) > self._history_size or (
            self._held > self._history_bytes and len(history) > 1
        ):
            oldest = history.popleft()
            self._held -= cost(oldest)
            self._floor = oldest.position or self._floor

    def _expire(self) -> None:
        """Drop events past the age limit from the front: their age is their id's ms part,
        the wall-clock time they were accepted at."""
        if not self._ttl_ms:
            return
        oldest_kept = time.time_ns() // 1_000_000 - self._ttl_ms
        history = self._history
        while history and _place(history[0])[0] < oldest_kept:
            aged = history.popleft()
            self._held -= cost(aged)
            self._floor = aged.position or self._floor

    def _next_position(self) -> Position:
        ms = time.time_ns() // 1_000_000
        last = self._last
        # Monotonic even when the wall clock steps back.
        if ms > last.ms:
            self._last = Position(self.epoch, ms, 0)
        else:
            self._last = last._replace(seq=last.seq + 1)
        return self._last

    def _remember(self, key: str, now: float, events: list[Event]) -> None:
        # The answer packed: places as deltas in hex, the epoch once. A 500-event batch's
        # ids take about 3 KB so, against 42 KB as a list of strings.
        places: list[str] = []
        ms = 0
        for event in events:
            assert event.position is not None
            places.append(f"{event.position.ms - ms:x}.{event.position.seq:x}")
            ms = event.position.ms
        packed = " ".join(places)
        self._keys[key] = (now + IDEMPOTENCY_SECONDS, packed)
        self._key_bytes += _key_cost(key, packed)
        while len(self._keys) > MAX_KEYS or self._key_bytes > KEY_BYTES:
            self._drop_oldest_key()

    def _unpack(self, packed: str) -> list[str]:
        ids = []
        ms = 0
        for place in packed.split(" "):
            delta, _, seq = place.partition(".")
            ms += int(delta, 16)
            ids.append(f"{self.epoch}:{ms}-{int(seq, 16)}")
        return ids

    def _drop_oldest_key(self) -> None:
        key, (_, packed) = self._keys.popitem(last=False)
        self._key_bytes -= _key_cost(key, packed)

    def _forget_keys(self, now: float) -> None:
        while self._keys:
            oldest = next(iter(self._keys.values()))
            if oldest[0] > now:
                return
            self._drop_oldest_key()

    async def read_after(self, position: Position, limit: int) -> list[Event] | None:
        self._expire()  # a quiet stream ages too
        if position.epoch != self.epoch or position.place > self._last.place:
            return None
        if position.place == self._floor.place:
            return list(islice(self._history, limit))
        index = bisect_left(self._history, position.place, key=_place)
        if index == len(self._history) or _place(self._history[index]) != position.place:
            return None  # older than the floor: expired
        return list(islice(self._history, index + 1, index + 1 + limit))

    async def read_before(self, before: Position | None, limit: int) -> Recent | None:
        self._expire()
        if before is not None and before.epoch != self.epoch:
            return None
        history = self._history
        end = len(history) if before is None else bisect_left(history, before.place, key=_place)
        return Recent(list(islice(history, max(0, end - limit), end)), self._last)

    def shared_counts(self) -> SharedCounts | None:
        return None  # one process: its own counts are all there are

    def tail(self) -> AsyncIterator[list[Event] | NewEpoch]:
        return self

    def __aiter__(self) -> MemoryBroker:
        return self

    async def __anext__(self) -> list[Event] | NewEpoch:
        receiver = self._live[1]
        try:
            batch = await receiver.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        if isinstance(batch, list):
            # And every batch already waiting: POSTs on several connections append several
            # in one turn of the event loop, and the hub would take one a turn, until the
            # backlog filled and publishing answered 503.
            taken = batch
            while len(taken) < TAKE:
                try:
                    more = receiver.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                assert isinstance(more, list)  # this broker never sends NewEpoch
                if taken is batch:
                    taken = list(batch)  # a copy once, not one per batch taken
                taken.extend(more)
            batch = taken
            self._waiting -= sum(map(cost, batch))
        return batch

    async def head(self) -> str:
        return str(self._last)

    async def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._live[0].close()
        self._live[1].close()


def _key_cost(key: str, packed: str) -> int:
    return len(key) + len(packed) + 200  # the strings, the tuple, the dict's slot


def _place(event: Event) -> tuple[int, int]:
    assert event.position is not None  # history holds only events with ids
    return event.position.place
