"""Brokers: where events get their ids, where history lives, and what feeds the hub.

`memory://` keeps one process's stream in memory; `redis://` shares one Redis Stream
between instances. The hub knows only the `Broker` protocol below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..events import Draft, Event, Position

IDEMPOTENCY_SECONDS = 600.0  # a repeated Idempotency-Key within 10 minutes publishes nothing


@dataclass(frozen=True, slots=True)
class Appended:
    """What `append` did: the ids in the batch's order, and whether the key was a repeat."""

    ids: list[str]
    repeated: bool = False


@dataclass(frozen=True, slots=True)
class NewEpoch:
    """Announced by `tail` when the stream was lost and begun again at `head`."""

    head: str


@dataclass(frozen=True, slots=True)
class Recent:
    """What `read_before` found: events oldest first, and the stream's newest position
    when they were read (where a subscriber that rewinds goes live from)."""

    events: list[Event]
    head: Position


class SharedCounts(Protocol):
    """Reader counts shared by the instances on one broker (see `readers`)."""

    async def exchange(
        self, changed: Mapping[str, int], local: Mapping[str, int]
    ) -> dict[str, int]:
        """Share this instance's `changed` counts (0: none left), or all of `local` when
        the shared copy was lost; the other live instances' counts, summed.

        Counts are by post_id, with every subscriber under the key "". Raises `Unavailable`.
        """
        ...

    async def leave(self) -> None:
        """Take this instance's counts out at once (a goodbye at shutdown); never raises."""
        ...


class Broker(Protocol):
    async def seen(self, key: str) -> list[str] | None:
        """The ids a key accepted in the last 10 minutes was answered with, else None."""
        ...

    async def append(self, drafts: Sequence[Draft], key: str | None = None) -> Appended:
        """Give the drafts ids and append them atomically, all or none.

        A key accepted in the last 10 minutes appends nothing and returns the first ids.
        Raises `Unavailable` when the broker cannot take them.
        """
        ...

    async def read_after(self, position: Position, limit: int) -> list[Event] | None:
        """Up to `limit` events after `position`, oldest first.

        None when `position` is not in history: expired, unknown, or of another epoch.
        """
        ...

    async def read_before(self, before: Position | None, limit: int) -> Recent | None:
        """Up to `limit` of the newest events before `before` (None: the newest of all),
        oldest first, none older than the history's age limit.

        None when `before` is of another epoch than the stream's.
        """
        ...

    def shared_counts(self) -> SharedCounts | None:
        """Where reader counts meet other instances' (None: this process is alone)."""
        ...

    def tail(self) -> AsyncIterator[list[Event] | NewEpoch]:
        """Every batch appended from now on, in id order, for this instance's hub."""
        ...

    async def head(self) -> str:
        """The newest id: always a valid `since`."""
        ...

    async def ready(self) -> bool:
        """True when the broker can be reached."""
        ...

    async def aclose(self) -> None: ...


def from_url(
    url: str,
    history_size: int,
    history_bytes: int = 64 << 20,
    backlog_bytes: int = 32 << 20,
    history_ttl: float = 0.0,
) -> Broker:
    """The broker for a `WSB_BROKER_URL`; redis is imported only when asked for.

    `history_ttl`: seconds an event stays replayable (0: no age limit).
    """
    if url == "memory://":
        from .memory import MemoryBroker

        return MemoryBroker(history_size, history_bytes, backlog_bytes, history_ttl)
    from .redis import RedisBroker

    return RedisBroker(url, history_size, history_ttl)
