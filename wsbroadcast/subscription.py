"""One subscriber: its filters, its bounded buffer, its writer, and its resume.

While the subscriber keeps up, the hub writes each frame straight through: a WebSocket
frame onto the connection's transport (`wire`), an SSE record through the server's `send`,
which completes without suspending while the client reads, so the hub steps it once and
moves on. Only a frame the client's socket cannot take now is finished by the subscriber's
own writer, and later events wait in its bounded buffer. The hub never awaits a subscriber.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from . import events
from .errors import CloseCode, Unavailable
from .events import Event, Position
from .wire import Wire

if TYPE_CHECKING:
    from .hub import Hub

logger = logging.getLogger("wsbroadcast.hub")

Message = dict[str, Any]
Send = Callable[[Message], Coroutine[Any, Any, None]]
REPLAY_CHUNK = 100  # events read from history at a time during a resume
STALL_SECONDS = 5.0  # one write stalled this long closes the subscriber with 1013


class _Resume:
    """The rest of a send that suspended in the hub, finished by the subscriber's writer."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        self.coro = coro
        self.waiting = waiting  # the future the send is blocked on

    def __await__(self) -> Generator[Any, None, None]:
        # Hand the future to the awaiting task; once it is done, carry the send on there.
        yield self.waiting
        yield from self.coro.__await__()


class Subscription:
    """One subscriber: its filters, its bounded buffer and its writer."""

    def __init__(
        self,
        hub: Hub,
        send: Send,
        pick: Callable[[Event], Message],
        *,
        types: frozenset[str] | None = None,
        post_id: str | None = None,
        expires_at: float | None = None,
        wire: Wire | None = None,
    ) -> None:
        self._hub = hub
        self._send = send
        self._wire = wire
        self._pick = pick
        self._types = types
        self._post_id = post_id
        self._filtered = types is not None or post_id is not None
        self._expires_at = expires_at  # wall-clock time the subscriber's token expires
        self._buffer_size = hub.client_buffer
        # The bounded buffer, made the first time a send would suspend: most subscribers
        # keep up and never need one.
        self._outbox: MemoryObjectSendStream[Event | _Resume] | None = None
        self._inbox: MemoryObjectReceiveStream[Event | _Resume] | None = None
        self.idle = False  # True while the writer waits with nothing to do
        self.replaying = True  # live events wait in `pending` until history is sent
        self.pending: list[Event] = []
        self.lagging = False  # `pending` overflowed during replay: read more history
        self.close_code: CloseCode | None = None
        self.stalled = False  # closed because a write stalled: cut, do not say goodbye
        self._replayed_to: Position | None = None  # the last id the replay sent
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
        if self._types is not None and event.type not in self._types:
            return False
        return self._post_id is None or event.post_id is None or event.post_id == self._post_id

    def offer(self, event: Event, now: float) -> bool:
        """Deliver now, or buffer; never blocks. True when the frame was written."""
        if self._filtered and not self.wants(event):
            return False
        if self._replayed_to is not None:
            # Events appended before the replay read them may still be on their way
            # through the hub: pass only those newer than the last replayed.
            if not _newer(event, self._replayed_to):
                return False
            self._replayed_to = None
        if self.idle and self._wire is not None:
            if self._wire.write(event.ws_frame):
                self.last_sent = now
                return True
            self.idle = False  # paused or closing: the writer takes it, and the rest in order
            self._queue(event)
        elif self.idle:
            try:
                pending = self._step(event)
            except OSError:  # the peer is gone: its receive loop sees the disconnect
                self.close(None)
                return False
            except Exception:  # one broken connection must never stop the broadcaster
                logger.exception("dropping a subscriber whose send failed")
                self.close(None)
                return False
            if pending is None:
                self.last_sent = now
                return True
            self.idle = False
            self._queue(pending)
        elif self.replaying:
            if len(self.pending) < self._buffer_size:
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

    def _step(self, event: Event) -> _Resume | None:
        """Start the send; None when it completed at once, else the rest of it to await."""
        coro = self._send(self._pick(event))
        try:
            return _Resume(coro, coro.send(None))
        except StopIteration:
            return None

    def _queue(self, item: Event | _Resume) -> None:
        """Into the bounded buffer (WouldBlock when full), rousing the writer."""
        if self._outbox is None:
            self._outbox, self._inbox = anyio.create_memory_object_stream[Event | _Resume](
                self._buffer_size
            )
        self._outbox.send_nowait(item)
        self._wake()

    def _wake(self) -> None:
        if self._waker is not None and not self._waker.done():
            self._waker.set_result(True)

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def close(self, code: CloseCode | None) -> None:
        """Stop delivering; the writer returns `code` (None: the peer left)."""
        if self.close_code is None:
            self.close_code = code
        self._hub.discard(self)
        self._wake()
        if self._writing is not None:
            self._writing.cancel()  # a stalled write must not hold up the close

    async def run(self, since: str | None) -> CloseCode | None:
        """Replay after `since`, then write live events until closed; the close code."""
        try:
            if since is not None:
                await self._replay(since)
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
        broker = self._hub.broker
        position = Position.parse(since)
        batch = await broker.read_after(position, REPLAY_CHUNK) if position else None
        if batch is not None:
            self._hub.metrics.resumes.labels("replayed").inc()
        while self.close_code is None:
            if batch is None:  # not in history (or expired while we replayed): resync
                position = await self._resync()
                batch = []
            for event in batch:
                if self.wants(event):
                    await self._write(event)
                position = event.position
            if position is None or (len(batch) < REPLAY_CHUNK and not self.lagging):
                break  # caught up: every later event is in `pending` or yet to come
            self.lagging = False
            batch = await broker.read_after(position, REPLAY_CHUNK)
        self._go_live(position)

    async def _resync(self) -> Position | None:
        head = await self._hub.broker.head()
        self._hub.metrics.resumes.labels("resync").inc()
        await self._write(events.resync(head))
        return Position.parse(head)

    def _go_live(self, position: Position | None) -> None:
        """From here on the hub delivers; pass on the live events newer than `position`."""
        self.replaying = False
        self._replayed_to = position
        pending, self.pending = self.pending, []
        for event in pending:
            if position is None or _newer(event, position):
                self._replayed_to = None
                self._queue(event)  # pending never holds more than the buffer

    async def _pump(self) -> None:
        # Items stay in the buffer until taken with receive_nowait(): waiting on the
        # waker instead of receive() means a timeout can never lose one.
        while self.close_code is None:
            if self._inbox is not None:
                try:
                    item = self._inbox.receive_nowait()
                except anyio.WouldBlock:
                    pass
                else:
                    await self._write(item)
                    continue
            if await self._idle():
                continue  # roused: something to write, or closed
            if self._expires_at is not None and self._expires_at <= time.time():
                self.close(CloseCode.UNAUTHORIZED)
            elif time.monotonic() - self.last_sent >= self._hub.heartbeat_seconds:
                await self._write(events.heartbeat())

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
        if self._hub.heartbeat_seconds:
            left = self.last_sent + self._hub.heartbeat_seconds - time.monotonic()
        if self._expires_at is not None:
            left = min(left, self._expires_at - time.time())
        return max(left, 0.0)

    async def _write(self, item: Event | _Resume) -> None:
        if self.closed:
            return
        # As in the fan-out: a write that completes at once needs no timer.
        stalled_since = time.monotonic()
        pending: Awaitable[None] | None
        if self._wire is not None and isinstance(item, Event):
            pending = None
            if not self._wire.write(item.ws_frame):
                pending = self._wire.send(item.ws_frame)
                if self._wire.paused:  # since the last frame written: the kernel took it in part
                    stalled_since = self.last_sent
        else:
            pending = self._step(item) if isinstance(item, Event) else item
        if pending is not None:
            left = stalled_since + STALL_SECONDS - time.monotonic()
            try:
                with anyio.fail_after(max(left, 0.0)) as self._writing:
                    await pending
            finally:
                self._writing = None
        # A close during the write cancels it: then it may not have completed.
        if self.close_code is None:
            self.last_sent = time.monotonic()
            self._hub.metrics.messages_sent.inc()

    def _discard_leftovers(self) -> None:
        if self._inbox is None or self._outbox is None:
            return
        self._outbox.close()
        while True:
            try:
                item = self._inbox.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            if isinstance(item, _Resume):
                item.coro.close()
        self._inbox.close()


def _settle(waker: asyncio.Future[bool], value: bool) -> None:
    if not waker.done():
        waker.set_result(value)


def _newer(event: Event, position: Position) -> bool:
    """Whether a live event is news to a subscriber whose replay ended at `position`."""
    if event.position is None:
        # A resync announcing the epoch the replay already resynced to is not news.
        head = event.data.get("head") if event.type == "resync" and event.data else None
        return not (isinstance(head, str) and head.startswith(f"{position.epoch}:"))
    if event.position.epoch != position.epoch:
        return True
    return event.position.place > position.place
