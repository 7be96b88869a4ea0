"""The hub: every local subscriber, and the broadcaster that fans each event out to them.

It knows subscribers and their transports, nothing of HTTP or Redis; the broker feeds it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint

from . import events
from .brokers import Appended, Broker, NewEpoch
from .errors import CloseCode, Refused, Unavailable
from .events import MAX_BATCH, Draft, Event, Position
from .metrics import Metrics
from .readers import Readers
from .subscription import Needs, Request, Subscription
from .transports import Kind, Transport

logger = logging.getLogger("wsbroadcast.hub")

__all__ = ["Hub", "Slot"]

T = TypeVar("T")

MAX_TIMED = 10_000  # POSTs awaiting their fan-out for wsb_publish_seconds, at most
# Offers between two yields to the rest of the server, during a batch: about 5 ms of
# writes here. A POST needs a turn or two of the event loop to be accepted (on Redis, one
# more for its XADD), and POSTs accepted during a fan-out join the next run: at 1,000 a
# Redis fan-out coalesced half as much as the embedded one's (bench/README.md, issue 19).
YIELD_EVERY = 250


class Slot:
    """A subscriber's slot under the connection limit, until released."""

    def __init__(self, hub: Hub, kind: Kind) -> None:
        self._hub: Hub | None = hub
        self.kind = kind
        hub.connections += 1
        hub.metrics.connections.labels(kind).inc()

    def release(self) -> None:
        if self._hub is not None:
            self._hub._release(self.kind)
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
        self.max_connections = max_connections
        self._needs = Needs(
            broker=broker,
            metrics=metrics,
            buffer_size=client_buffer,
            heartbeat_seconds=heartbeat_seconds,
            position=self.position,
            on_close=self.discard,
        )
        # Dicts for their order: frames go out in the order subscribers came, as a list would.
        self._subscribers: dict[Subscription, None] = {}  # every one
        # The fan-out's index, by (post_id, type), None for a filter not given: an event
        # of type T for post X goes to the four groups that may want it, never past the
        # subscribers of other posts or other types (contract: `post_id`, `types`).
        self._index: dict[tuple[str | None, str | None], dict[Subscription, None]] = {}
        # And by type alone, for events with no post_id (every post's subscribers want them).
        self._by_type: dict[str | None, dict[Subscription, None]] = {}
        self.readers = Readers(metrics, broker.shared_counts())
        self._accepted: dict[str, float] = {}  # last id of a local POST -> accepted at
        self._position: Position | None = None  # the last event fanned out
        self._unyielded = 0  # offers made since the broadcaster last let others run
        self.connections = 0
        self.closing = False
        self._drained = anyio.Event()

    def position(self) -> Position | None:
        """How far the fan-out has got: the last event handed to every subscriber."""
        return self._position

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The broadcaster: read the broker's tail and fan every event out, in id order."""
        task_status.started()
        async for batch in self.broker.tail():
            if isinstance(batch, NewEpoch):
                logger.warning("the stream was lost; new epoch at %s", batch.head)
                self._position = Position.parse(batch.head)
                self._announce(events.resync(batch.head, reason="history_expired"))
                continue
            await self._deliver(batch)

    async def _deliver(self, batch: list[Event]) -> None:
        """A batch from the broker, run by run. (A method of its own: the last run's
        snapshots would keep gone subscribers alive while the broadcaster waits.)"""
        for run, shares in self._runs(batch):
            await self._fan_out(run, shares)
            self._position = run[-1].position
            # A batch from the broker may hold several POSTs' events: time each.
            if self._accepted:
                for event in run:
                    accepted = self._accepted.pop(event.id or "", None)
                    if accepted is not None:
                        self.metrics.publish_seconds.observe(time.monotonic() - accepted)

    def _groups(self, event: Event) -> tuple[dict[Subscription, None], ...]:
        """The groups of the index that may want a stream event."""
        if event.post_id is None:  # a notice: every post's subscribers of its type
            return _groups(self._by_type, (None, event.type))
        post_id, kind = event.post_id, event.type
        return _groups(self._index, ((None, None), (None, kind), (post_id, None), (post_id, kind)))

    def _runs(self, batch: list[Event]) -> Iterator[tuple[list[Event], list[_Share]]]:
        """The batch cut into runs fanned out together, each with the groups of the index
        it reaches and their shares. A run ends before a group's share would pass
        RUN_EVENTS or RUN_BYTES, so one subscriber's write stays bounded however many posts
        a run spans, and where notices meet events for posts (see `_fan_out`)."""
        run: list[Event] = []
        reached: dict[int, _Share] = {}
        for event in batch:
            groups = self._groups(event)
            if run and (
                (event.post_id is None) != (run[-1].post_id is None)
                or any(_full(reached.get(id(group)), event) for group in groups)
            ):
                yield run, list(reached.values())
                run, reached = [], {}
            run.append(event)
            for group in groups:
                if (share := reached.get(id(group))) is None:
                    # A snapshot: one closed mid-loop leaves the index, not this tuple.
                    share = reached[id(group)] = _Share(tuple(group))
                share.events.append(event)
                share.size += len(event.ws_frame)
        if run:
            yield run, list(reached.values())

    async def _fan_out(self, run: list[Event], shares: list[_Share]) -> None:
        """Hand a run of events to every subscriber that may want them, each subscriber's
        share in one write (a send costs the kernel far more than its bytes: issue 19).

        Every YIELD_EVERY offers the rest of the server runs: a fan-out to thousands must
        not hold up what else is waiting, and POSTs accepted meanwhile make the next run
        longer, so under load the writes per event fall by themselves.
        """
        now = time.monotonic()
        # A subscriber sits in one group per type it names, and a run never mixes notices
        # (indexed by type alone) with events for posts: only one naming several types may
        # be in several of these groups, and gets its shares merged, in id order.
        merge = len(shares) > 1
        several: dict[Subscription, list[Event]] = {}
        for share in shares:
            part = share.events
            frames = b"".join([event.ws_frame for event in part])  # a group's frames, once
            for chunk in _chunks(share.targets):
                sent = 0
                for subscription in chunk:
                    if merge and subscription.several_types:
                        several.setdefault(subscription, []).extend(part)
                    else:
                        sent += subscription.offer_all(part, frames, now)
                await self._offered(len(chunk) * len(part), sent)
        if several:
            order = {id(event): at for at, event in enumerate(run)}
            for subscription, events in several.items():
                events.sort(key=lambda event: order[id(event)])
                frames = b"".join([event.ws_frame for event in events])
                await self._offered(len(events), subscription.offer_all(events, frames, now))

    async def _offered(self, offers: int, sent: int) -> None:
        if sent:
            self.metrics.messages_sent.inc(sent)
        # With the index an event may reach few subscribers: yield by offers, not by event.
        self._unyielded += offers
        if self._unyielded >= YIELD_EVERY:
            self._unyielded = 0
            await checkpoint()

    def _announce(self, event: Event) -> None:
        """A control message (a resync) to every subscriber: it passes every filter."""
        now = time.monotonic()
        sent = 0
        for subscription in tuple(self._subscribers):
            sent += subscription.offer(event, now)
        if sent:
            self.metrics.messages_sent.inc(sent)

    async def publish(self, drafts: list[Draft], key: str | None) -> Appended:
        accepted = time.monotonic()
        appended = await self.broker.append(drafts, key)
        if not appended.repeated:
            self.metrics.events_published.inc(len(appended.ids))
            last, done = Position.parse(appended.ids[-1]), self._position
            if last and done and last.epoch == done.epoch and last.place <= done.place:
                # On Redis the tail may read and fan the events out before the append's
                # answer comes back: they were handed to every subscriber by now.
                self.metrics.publish_seconds.observe(time.monotonic() - accepted)
                return appended
            if len(self._accepted) >= MAX_TIMED:  # a batch lost with its stream never returns
                del self._accepted[next(iter(self._accepted))]
            self._accepted[appended.ids[-1]] = accepted
        return appended

    def admit(self, kind: Kind) -> Slot:
        """Take a slot under the connection limit, shared by both transports."""
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
        return Slot(self, kind)

    def _release(self, kind: Kind) -> None:
        self.connections -= 1
        self.metrics.connections.labels(kind).dec()
        if self.closing and not self.connections:
            self._drained.set()

    def subscribe(self, transport: Transport, request: Request) -> Subscription:
        """Register a subscriber; it buffers live events until its `run` replays history."""
        subscription = Subscription(transport, request, self._needs)
        self._subscribers[subscription] = None
        for key in _keys(request.post_id, request.types):
            self._index.setdefault(key, {})[subscription] = None
        for kind in request.types or (None,):
            self._by_type.setdefault(kind, {})[subscription] = None
        self.readers.join(subscription)
        if self.closing:
            subscription.close(CloseCode.GOING_AWAY)
        return subscription

    async def serve(
        self,
        transport: Transport,
        request: Request,
        slot: Slot,
        started: Callable[[Subscription], None] | None = None,
    ) -> int | None:
        """One subscriber's life, for either endpoint: replay, live, goodbye; its close code
        (None: the peer left). `started` is handed the subscription, to close it when the
        peer leaves."""
        try:
            subscription = self.subscribe(transport, request)
            if started is not None:
                started(subscription)
            code = await subscription.run(request.since, request.rewind)
            if code is not None:
                await transport.close(code, stalled=subscription.stalled)
            return code
        finally:
            slot.release()

    def discard(self, subscription: Subscription) -> None:
        """Unregister a subscriber; called on every close, so only the first one counts."""
        if subscription not in self._subscribers:
            return
        del self._subscribers[subscription]
        for key in _keys(subscription.post_id, subscription.types):
            _remove(self._index, key, subscription)
        for kind in subscription.types or (None,):
            _remove(self._by_type, kind, subscription)
        self.readers.leave(subscription)

    async def close_all(self, within: float) -> None:
        """Shut down: close every subscriber with 1001 and wait, at most `within` s, for them."""
        self.closing = True
        for subscription in list(self._subscribers):
            subscription.close(CloseCode.GOING_AWAY)
        if self.connections:
            with anyio.move_on_after(within):
                await self._drained.wait()


def _keys(post_id: str | None, types: frozenset[str] | None) -> list[tuple[str | None, str | None]]:
    """Where a subscriber sits in the fan-out's index."""
    if types is None:
        return [(post_id, None)]
    return [(post_id, kind) for kind in types]


def _groups(
    index: dict[Any, dict[Subscription, None]], keys: Iterable[Any]
) -> tuple[dict[Subscription, None], ...]:
    return tuple(group for key in keys if (group := index.get(key)) is not None)


def _chunks(items: tuple[T, ...]) -> Iterator[tuple[T, ...]]:
    """Offers between two yields of the broadcaster."""
    for start in range(0, len(items), YIELD_EVERY):
        yield items[start : start + YIELD_EVERY]


# A subscriber's share of a run is as long as a POST's batch may be, so that a subscriber
# of one post gets its share of several POSTs (a POST for 100 posts holds one event for
# it) in one write; the bytes bound keeps one write, and a socket's unsent remainder, well
# under MAX_UNSENT.
RUN_EVENTS = MAX_BATCH
RUN_BYTES = 256 << 10  # and their frames' bytes, at most (one event may pass it alone)


class _Share:
    """A group of the index, as it was when a run began, and its share of the run."""

    __slots__ = ("events", "size", "targets")

    def __init__(self, targets: tuple[Subscription, ...]) -> None:
        self.targets = targets
        self.events: list[Event] = []
        self.size = 0  # the events' frames' bytes


def _full(share: _Share | None, event: Event) -> bool:
    """Whether `event` would take a group's share of a run past its bounds."""
    return share is not None and (
        len(share.events) == RUN_EVENTS or share.size + len(event.ws_frame) > RUN_BYTES
    )


def _remove(
    index: dict[Any, dict[Subscription, None]], key: Any, subscription: Subscription
) -> None:
    group = index[key]
    del group[subscription]
    if not group:
        del index[key]
