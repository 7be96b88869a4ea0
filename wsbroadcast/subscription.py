"""One subscriber: its filters, its bounded buffer, its writer, and its resume.

While the subscriber keeps up, the hub hands each event straight to its transport, which
writes it at once. Only an event the socket cannot take now goes to the subscriber's
bounded buffer, and its own writer sends it and the ones after it, in order. The hub
never awaits a subscriber. A subscription knows its transport through the `Transport`
interface and is handed what it needs; it knows nothing of the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import events
from .brokers import Broker
from .errors import CloseCode, Unavailable
from .events import Event, Position
from .metrics import Metrics
from .transports import STALL_SECONDS, Transport

logger = logging.getLogger("wsbroadcast.hub")

Arg = TypeVar("Arg")
REPLAY_CHUNK = 100  # events read from history at a time during a resume or a rewind


@dataclass(frozen=True, slots=True)
class Request:
    """What a subscriber asked for, once checked: where to begin, and its filters."""

    since: str | None = None
    types: frozenset[str] | None = None
    post_id: str | None = None
    expires_at: float | None = None  # wall-clock time the subscriber's token expires
    rewind: int | None = None  # begin with the last N events that pass the filters
    readers: bool = False  # also receive the post's reader counts (needs post_id)


@dataclass(frozen=True, slots=True)
class Needs:
    """What a subscription is handed by its hub."""

    broker: Broker
    metrics: Metrics
    buffer_size: int
    heartbeat_seconds: float
    position: Callable[[], Position | None]  # how far the fan-out has got
    on_close: Callable[[Subscription], None]


class Subscription:
    """One subscriber: its filters, its bounded buffer and its writer."""

    __slots__ = (  # one per connection: a dict of these would be 1 KB more
        "__weakref__",  # for the leak tests' weak references
        "_count_waiting",
        "_expires_at",
        "_filtered",
        "_inbox",
        "_needs",
        "_outbox",
        "_reached",
        "_replayed_to",
        "_waker",
        "_writing",
        "close_code",
        "closed",
        "idle",
        "lagging",
        "last_sent",
        "pending",
        "post_id",
        "replaying",
        "several_types",
        "stalled",
        "transport",
        "types",
        "wants_readers",
    )

    def __init__(self, transport: Transport, request: Request, needs: Needs) -> None:
        self.transport = transport
        self._needs = needs
        self.types = request.types  # the hub indexes subscribers by these, and post_id
        self.post_id = request.post_id  # the hub indexes subscribers by it
        self.several_types = request.types is not None and len(request.types) > 1
        self.wants_readers = request.readers
        self._filtered = request.types is not None or request.post_id is not None
        self._expires_at = request.expires_at
        # The bounded buffer, made the first time a write must wait: most subscribers
        # keep up and never need one.
        self._outbox: MemoryObjectSendStream[Event] | None = None
        self._inbox: MemoryObjectReceiveStream[Event] | None = None
        self.idle = False  # True while the writer waits with nothing to do
        self.replaying = True  # live events wait in `pending` until history is sent
        self.pending: list[Event] = []
        self._count_waiting: Event | None = None  # the newest reader count offered meanwhile
        self.lagging = False  # `pending` overflowed during replay: read more history
        self.close_code: CloseCode | None = None
        self.closed = False  # by the server (close_code) or because the peer left (None)
        self.stalled = False  # closed because a write stalled: cut, do not say goodbye
        self._replayed_to: Position | None = None  # the last id the replay sent
        self._reached: Position | None = needs.position()  # where the stream has got for us
        self._writing: anyio.CancelScope | None = None  # the write in progress
        # The idle writer waits on a bare future: an anyio Event and a cancel scope per
        # subscriber would cost 1.5 KB each, and most subscribers are idle all the time.
        self._waker: asyncio.Future[bool] | None = None
        # time.monotonic(), not anyio.current_time(): that looks up the running async
        # library on every call, and these clocks are read once per connection and event.
        self.last_sent = time.monotonic()

    def wants(self, event: Event) -> bool:
        if event.id is None:  # control messages pass every filter
            return True
        if self.types is not None and event.type not in self.types:
            return False
        return self.post_id is None or event.post_id is None or event.post_id == self.post_id

    def offer(self, event: Event, now: float) -> bool:
        """Deliver now, or buffer; never blocks. True when the event was written.

        Only for events the subscriber's filters let through: the hub's index, by post_id
        and type, offers it nothing else (control messages pass every filter).
        """
        if self.closed:  # the fan-out yields mid-loop: its snapshot may hold closed ones
            return False
        if self._replayed_to is not None and _in_stream(event):
            # Events appended before the replay read them may still be on their way
            # through the hub: pass only those newer than the last replayed.
            if not _newer(event, self._replayed_to):
                return False
            self._replayed_to = None
        if self.idle:
            written = self._write_now(self.transport.write_now, event)
            if written:
                self.last_sent = now
                return True
            if written is None:  # the write failed: closed
                return False
            self.idle = False  # the socket is busy: the writer takes it, and the rest in order
            self._queue(event)
        elif self.replaying:
            if not _in_stream(event):  # a reader count: in no history, only the newest matters
                self._count_waiting = event
            elif len(self.pending) < self._needs.buffer_size:
                self.pending.append(event)
            else:  # history still has them: the replay reads further instead
                self.pending.clear()
                self.lagging = True
        else:
            try:
                self._queue(event)
            except anyio.WouldBlock:
                self.close(CloseCode.TOO_SLOW)
        return False

    def offer_all(self, events: list[Event], frames: bytes, now: float) -> int:
        """Several events this subscriber wants, `frames` their frames joined: in one write
        when the subscriber is idle and past its replay's seam, else offered one by one.
        How many were written; never blocks."""
        if self.closed:
            return 0
        if self.idle and self._replayed_to is None:
            written = self._write_now(self.transport.write_joined_now, frames)
            if written:
                self.last_sent = now
                return len(events)
            if written is None:  # the write failed: closed
                return 0
        return sum(self.offer(event, now) for event in events)

    def _write_now(self, write: Callable[[Arg], bool], arg: Arg) -> bool | None:
        """A write the fan-out makes: whether it was made now, or None when it failed and
        the subscriber is closed."""
        try:
            return write(arg)
        except OSError:  # the peer is gone: the endpoint sees the disconnect
            self.close(None)
        except Exception:  # one broken connection must never stop the broadcaster
            logger.exception("dropping a subscriber whose write failed")
            self.close(None)
        return None

    def _queue(self, event: Event) -> None:
        """Into the bounded buffer (WouldBlock when full), rousing the writer."""
        if self._outbox is None:
            self._outbox, self._inbox = anyio.create_memory_object_stream[Event](
                self._needs.buffer_size
            )
        self._outbox.send_nowait(event)
        self._wake()

    def _wake(self) -> None:
        if self._waker is not None and not self._waker.done():
            self._waker.set_result(True)

    def close(self, code: CloseCode | None) -> None:
        """Stop delivering; the writer returns `code` (None: the peer left)."""
        if self.close_code is None:
            self.close_code = code
        self.closed = True
        self._needs.on_close(self)
        self._wake()
        if self._writing is not None:
            self._writing.cancel()  # a stalled write must not hold up the close

    async def run(self, since: str | None, rewind: int | None = None) -> CloseCode | None:
        """Replay after `since` (else the last `rewind` events), then write live events
        until closed; the close code."""
        try:
            if since is not None:
                await self._replay(since)
            elif rewind is not None:
                await self._rewind(rewind)
            else:
                self._go_live(None)
            await self._pump()
        except TimeoutError:  # one write stalled 5 s: a close frame would stall too
            self.stalled = True
            self.close(CloseCode.TOO_SLOW)
        except Unavailable:  # no history to replay: reconnect with backoff and `since`
            self.close(CloseCode.TOO_SLOW)
        except OSError:
            self.close(None)
        finally:
            self.close(self.close_code)
            self._discard_leftovers()
        return self.close_code

    async def _replay(self, since: str) -> None:
        broker = self._needs.broker
        position = Position.parse(since)
        batch = await broker.read_after(position, REPLAY_CHUNK) if position else None
        if batch is not None:
            self._needs.metrics.resumes.labels("replayed").inc()
        await self._catch_up(position, batch)

    async def _catch_up(self, position: Position | None, batch: list[Event] | None) -> None:
        """Write `batch` and history after it until caught up with `pending`; go live."""
        broker = self._needs.broker
        while not self.closed:
            if batch is None:  # not in history (or expired while we replayed): resync
                position = await self._resync()
                batch = []
            await self._write_all([event for event in batch if self.wants(event)])
            if batch:
                position = batch[-1].position
            if position is None or (len(batch) < REPLAY_CHUNK and not self.lagging):
                break  # caught up: every later event is in `pending` or yet to come
            self.lagging = False
            batch = await broker.read_after(position, REPLAY_CHUNK)
        self._go_live(position)

    async def _rewind(self, count: int) -> None:
        """The last `count` events that pass the filters, read backwards in chunks, then
        live from the stream's head as it was at the first read: the seam of `since`."""
        broker = self._needs.broker
        found: list[Event] = []
        head: Position | None = None
        before: Position | None = None
        while len(found) < count and not self.closed:
            recent = await broker.read_before(before, REPLAY_CHUNK)
            if recent is None:  # the stream was lost meanwhile: the hub sends a resync
                break
            head = head or recent.head
            found[:0] = [event for event in recent.events if self.wants(event)]
            if len(recent.events) < REPLAY_CHUNK:
                break  # the start of history, or of its age limit
            before = recent.events[0].position
        await self._write_all(found[-count:])
        if self.lagging and head is not None:  # live events overflowed `pending`: read them
            self.lagging = False
            await self._catch_up(head, await broker.read_after(head, REPLAY_CHUNK))
        else:
            self._go_live(head)

    async def _resync(self) -> Position | None:
        head = await self._needs.broker.head()
        self._needs.metrics.resumes.labels("resync").inc()
        await self._write(events.resync(head))
        return Position.parse(head)

    def _go_live(self, position: Position | None) -> None:
        """From here on the hub delivers; pass on the live events newer than `position`."""
        self.replaying = False
        self._replayed_to = position
        if position is not None:
            self._reached = _later(self._reached, position)
        pending, self.pending = self.pending, []
        for event in pending:
            if position is None or _newer(event, position):
                self._replayed_to = None
                self._queue(event)  # pending never holds more than the buffer
        count, self._count_waiting = self._count_waiting, None
        if count is not None:
            with contextlib.suppress(anyio.WouldBlock):  # no room: the next change comes
                self._queue(count)

    async def _pump(self) -> None:
        # Items stay in the buffer until taken with receive_nowait(): waiting on the
        # waker instead of receive() means a timeout can never lose one.
        heartbeat_seconds = self._needs.heartbeat_seconds
        while not self.closed:
            if self._inbox is not None:
                try:
                    event = self._inbox.receive_nowait()
                except anyio.WouldBlock:
                    pass
                else:
                    await self._write(event)
                    continue
            if await self._idle():
                continue  # roused: something to write, or closed
            if self._expires_at is not None and self._expires_at <= time.time():
                self.close(CloseCode.UNAUTHORIZED)
            elif heartbeat_seconds and time.monotonic() - self.last_sent >= heartbeat_seconds:
                await self._write(await self._heartbeat())

    async def _heartbeat(self) -> Event:
        """A heartbeat naming how far this stream has got: every event up to it was
        written or filtered out, since the writer is idle (contract: `last_id`)."""
        reached = _later(self._reached, self._needs.position())
        if reached is None:  # nothing fanned out since this process started
            reached = Position.parse(await self._needs.broker.head())
        self._reached = reached
        last_id = str(reached) if reached else ""
        return events.heartbeat(last_id, self._needs.heartbeat_seconds, filtered=self._filtered)

    async def _idle(self) -> bool:
        """Wait until roused (True) or until a heartbeat or the token expiry is due (False)."""
        loop = asyncio.get_running_loop()
        waker: asyncio.Future[bool] = loop.create_future()
        self._waker = waker
        timer = None
        if (quiet := self._quiet_left()) < math.inf:
            timer = loop.call_later(quiet, _settle, waker, False)
        self.idle = True
        try:
            return await waker
        finally:
            self.idle = False
            self._waker = None
            if timer is not None:
                timer.cancel()

    def _quiet_left(self) -> float:
        """Seconds until a heartbeat is due or the token expires."""
        left = math.inf
        if self._needs.heartbeat_seconds:
            left = self.last_sent + self._needs.heartbeat_seconds - time.monotonic()
        if self._expires_at is not None:
            left = min(left, self._expires_at - time.time())
        return max(left, 0.0)

    async def _write(self, event: Event) -> None:
        if self.closed:
            return
        transport = self.transport
        if not transport.write_now(event):
            # A write that completes at once needs no timer. A socket that still holds
            # part of the last frame has been stalled since that frame was written.
            stalled_since = self.last_sent if transport.backed_up else time.monotonic()
            left = stalled_since + STALL_SECONDS - time.monotonic()
            try:
                with anyio.fail_after(max(left, 0.0)) as self._writing:
                    await transport.write(event)
            finally:
                self._writing = None
        # A close during the write cancels it: then it may not have completed.
        if not self.closed:
            self._wrote(event, 1)

    async def _write_all(self, events: list[Event]) -> None:
        """Write `events` in order, as many at a time as the transport takes at once."""
        done = 0
        while done < len(events) and not self.closed:
            if written := self.transport.write_some_now(events[done:]):
                done += written
                self._wrote(events[done - 1], written)
            else:  # the socket is busy: wait for it, timed as any write
                await self._write(events[done])
                done += 1

    def _wrote(self, last: Event, count: int) -> None:
        self.last_sent = time.monotonic()
        if last.position is not None:
            self._reached = last.position
        self._needs.metrics.messages_sent.inc(count)

    def _discard_leftovers(self) -> None:
        if self._inbox is None or self._outbox is None:
            return
        self._outbox.close()
        self._inbox.close()


class Departure:
    """The peer's leaving, told to its subscription whenever it comes, before the
    subscription has started or after: closed, its writer returns. The endpoints end a
    subscriber so rather than by cancelling its task, since a cancelled task or scope
    leaves a reference cycle (anyio keeps the CancelledError in a frame its traceback
    holds), and the whole connection with it, for the collector's rarest pass."""

    __slots__ = ("code", "gone", "subscription")

    def __init__(self) -> None:
        self.subscription: Subscription | None = None
        self.gone = False
        self.code = 1005  # the peer's close code, once it has left (1005: none given)

    def started(self, subscription: Subscription) -> None:
        self.subscription = subscription
        if self.gone:
            subscription.close(None)

    def left(self, code: int = 1005) -> None:
        if not self.gone:
            self.code = code
        self.gone = True
        if self.subscription is not None:
            self.subscription.close(None)


def _settle(waker: asyncio.Future[bool], value: bool) -> None:
    if not waker.done():
        waker.set_result(value)


def _later(a: Position | None, b: Position | None) -> Position | None:
    """The further of two stream positions; of two epochs, the one announced last (b)."""
    if a is None or b is None:
        return a or b
    if a.epoch != b.epoch:
        return b
    return a if a.place > b.place else b


def _in_stream(event: Event) -> bool:
    """Whether an event has a place in the stream (a resync names one); a reader count
    has none, and passes the replay's seam untouched."""
    return event.position is not None or event.type == "resync"


def _newer(event: Event, position: Position) -> bool:
    """Whether a live event is news to a subscriber whose replay ended at `position`."""
    if event.position is None:
        # A resync announcing the epoch the replay already resynced to is not news.
        head = event.data.get("head") if event.type == "resync" and event.data else None
        return not (isinstance(head, str) and head.startswith(f"{position.epoch}:"))
    if event.position.epoch != position.epoch:
        return True
    return event.position.place > position.place
