"""The embedded broker: one process, history in a ring buffer, a new epoch at each start."""

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
from ..events import Draft, Event, Position, make_event
from . import IDEMPOTENCY_SECONDS, Appended, NewEpoch

MAX_KEYS = 100_000  # idempotency keys kept at most; the oldest go first
BACKLOG = 1024  # batches waiting for the hub before publishing answers 503


class MemoryBroker:
    def __init__(self, history_size: int) -> None:
        self.epoch = secrets.token_hex(4)
        self._history: deque[Event] = deque(maxlen=history_size)
        # The position just before the oldest event kept: a `since` there misses nothing.
        self._floor = Position(self.epoch, 0, 0)
        self._last = self._floor
        self._keys: OrderedDict[str, tuple[float, list[str]]] = OrderedDict()
        self._live: tuple[
            MemoryObjectSendStream[list[Event] | NewEpoch],
            MemoryObjectReceiveStream[list[Event] | NewEpoch],
        ] = anyio.create_memory_object_stream[list[Event] | NewEpoch](BACKLOG)

    async def append(self, drafts: Sequence[Draft], key: str | None = None) -> Appended:
        # No await below: check, append and hand-off happen as one step.
        now = time.monotonic()
        if key is not None:
            self._forget_keys(now)
            if (seen := self._keys.get(key)) is not None:
                return Appended(seen[1], repeated=True)
        sender = self._live[0]
        if sender.statistics().current_buffer_used >= BACKLOG:
            raise Unavailable("the hub is saturated; retry shortly")
        events = [make_event(draft, self._next_position()) for draft in drafts]
        for event in events:
            if len(self._history) == self._history.maxlen:
                self._floor = self._history[0].position or self._floor
            self._history.append(event)
        sender.send_nowait(events)
        ids = [event.id or "" for event in events]
        if key is not None:
            self._keys[key] = (now + IDEMPOTENCY_SECONDS, ids)
            if len(self._keys) > MAX_KEYS:
                self._keys.popitem(last=False)
        return Appended(ids)

    def _next_position(self) -> Position:
        ms = time.time_ns() // 1_000_000
        last = self._last
        # Monotonic even when the wall clock steps back.
        if ms > last.ms:
            self._last = Position(self.epoch, ms, 0)
        else:
            self._last = last._replace(seq=last.seq + 1)
        return self._last

    def _forget_keys(self, now: float) -> None:
        while self._keys:
            oldest = next(iter(self._keys.values()))
            if oldest[0] > now:
                return
            self._keys.popitem(last=False)

    async def read_after(self, position: Position, limit: int) -> list[Event] | None:
        if position.epoch != self.epoch or position.place > self._last.place:
            return None
        if position.place == self._floor.place:
            return list(islice(self._history, limit))
        index = bisect_left(self._history, position.place, key=_place)
        if index == len(self._history) or _place(self._history[index]) != position.place:
            return None  # older than the floor: expired
        return list(islice(self._history, index + 1, index + 1 + limit))

    def tail(self) -> AsyncIterator[list[Event] | NewEpoch]:
        return self._live[1]

    async def head(self) -> str:
        return str(self._last)

    async def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._live[0].close()
        self._live[1].close()


def _place(event: Event) -> tuple[int, int]:
    assert event.position is not None  # history holds only events with ids
    return event.position.place
