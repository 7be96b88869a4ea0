"""The hub: every local subscriber, and the broadcaster that fans each event out to them.

It knows subscribers and their buffers, nothing of HTTP or Redis; the broker feeds it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint

from . import events
from .brokers import Appended, Broker, NewEpoch
from .errors import CloseCode, Refused, Unavailable
from .events import Draft, Event
from .metrics import Metrics
from .subscription import Message, Send, Subscription
from .wire import Wire

logger = logging.getLogger("wsbroadcast.hub")

__all__ = ["Hub", "Place", "Send"]

MAX_TIMED = 10_000  # POSTs awaiting their fan-out for wsb_publish_seconds, at most


class Place:
    """A subscriber's place under the connection limit, until released."""

    def __init__(self, hub: Hub, transport: str) -> None:
        self._hub: Hub | None = hub
        self._transport = transport
        hub.connections += 1
        hub.metrics.connections.labels(transport).inc()

    def release(self) -> None:
        if self._hub is not None:
            self._hub._release(self._transport)
            self._hub = None


class Hub:
    """Fans every event from the broker out to every local subscriber."""

    def __init__(
        self,
        broker: Broker,
        metrics: Metrics,
        *,
        client_buffer: int,
        max_connections: int,
        heartbeat_seconds: float,
    ) -> None:
        self.broker = broker
        self.metrics = metrics
        self.client_buffer = client_buffer
        self.max_connections = max_connections
        self.heartbeat_seconds = heartbeat_seconds
        # A dict for its order: frames go out in the order subscribers came, as a list would.
        self._subscribers: dict[Subscription, None] = {}
        self._accepted: dict[str, float] = {}  # last id of a local POST -> accepted at
        self.connections = 0
        self.closing = False
        self._drained = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The broadcaster: read the broker's tail and fan every event out, in id order."""
        task_status.started()
        async for batch in self.broker.tail():
            if isinstance(batch, NewEpoch):
                logger.warning("the stream was lost; new epoch at %s", batch.head)
                self._fan_out(events.resync(batch.head, reason="history_expired"))
                continue
            for event in batch:
                self._fan_out(event)
                await checkpoint()  # a large batch must not starve the rest of the server
            accepted = self._accepted.pop(batch[-1].id or "", None)
            if accepted is not None:
                self.metrics.publish_seconds.observe(time.monotonic() - accepted)

    def _fan_out(self, event: Event) -> None:
        now = time.monotonic()
        sent = 0
        # A snapshot: a subscriber closed for overflow leaves the set during the loop.
        for subscription in tuple(self._subscribers):
            sent += subscription.offer(event, now)
        if sent:
            self.metrics.messages_sent.inc(sent)

    async def publish(self, drafts: list[Draft], key: str | None) -> Appended:
        accepted = time.monotonic()
        appended = await self.broker.append(drafts, key)
        if not appended.repeated:
            if len(self._accepted) >= MAX_TIMED:  # a batch lost with its stream never returns
                del self._accepted[next(iter(self._accepted))]
            self._accepted[appended.ids[-1]] = accepted
            self.metrics.events_published.inc(len(appended.ids))
        return appended

    def admit(self, transport: str) -> Place:
        """Take a place under the connection limit, shared by both transports."""
        if self.closing:
            raise Refused(
                CloseCode.GOING_AWAY, "server shutting down", Unavailable("shutting down")
            )
        if self.connections >= self.max_connections:
            raise Refused(
                CloseCode.TOO_SLOW,
                "at the connection limit",
                Unavailable("at the connection limit; retry shortly"),
            )
        return Place(self, transport)

    def _release(self, transport: str) -> None:
        self.connections -= 1
        self.metrics.connections.labels(transport).dec()
        if self.closing and not self.connections:
            self._drained.set()

    def subscribe(
        self,
        send: Send,
        pick: Callable[[Event], Message],
        *,
        types: frozenset[str] | None = None,
        post_id: str | None = None,
        expires_at: float | None = None,
        wire: Wire | None = None,
    ) -> Subscription:
        """Register a subscriber; it buffers live events until its `run` replays history."""
        subscription = Subscription(
            self, send, pick, types=types, post_id=post_id, expires_at=expires_at, wire=wire
        )
        self._subscribers[subscription] = None
        if self.closing:
            subscription.close(CloseCode.GOING_AWAY)
        return subscription

    def discard(self, subscription: Subscription) -> None:
        self._subscribers.pop(subscription, None)

    async def close_all(self, within: float) -> None:
        """Shut down: close every subscriber with 1001 and wait, at most `within` s, for them."""
        self.closing = True
        for subscription in list(self._subscribers):
            subscription.close(CloseCode.GOING_AWAY)
        if self.connections:
            with anyio.move_on_after(within):
                await self._drained.wait()
