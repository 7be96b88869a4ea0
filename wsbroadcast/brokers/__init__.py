"""Brokers: where events get their ids, where history lives, and what feeds the hub.

`memory://` keeps one process's stream in memory; `redis://` shares one Redis Stream
between instances. The hub knows only the `Broker` protocol below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
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
    url: str, history_size: int, history_bytes: int = 64 << 20, backlog_bytes: int = 32 << 20
) -> Broker:
    """The broker for a `WSB_BROKER_URL`; redis is imported only when asked for."""
    if url == "memory://":
        from .memory import MemoryBroker

        return MemoryBroker(history_size, history_bytes, backlog_bytes)
    from .redis import RedisBroker

    return RedisBroker(url, history_size)
