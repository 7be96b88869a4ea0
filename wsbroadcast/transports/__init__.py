"""How an event's bytes reach a subscriber's socket: one Transport per connection kind.

- `UvicornWebSocket`: the fan-out writes each event's frame, built once for all (a frame
  from server to client is never masked, RFC 6455 5.1), straight onto the connection's
  socket. The only code that knows uvicorn's internals is in this package: the protocol
  subclasses that `cli` hands uvicorn (`protocols`) put the connection in the ASGI
  scope's `extensions`, and `check_uvicorn` names every attribute relied on.
- `ASGITransport`: the plain ASGI `send`, for any other server, a connection that
  negotiated compression, and Server-Sent Events.

The hub never awaits a transport: `write_now` writes or declines at once; only a
subscriber's own writer awaits `write`.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any, Literal, Protocol, cast

import anyio
from starlette.types import Scope

from ..events import Event
from .protocols import (
    CLOSE_SECONDS,
    CONNECTION,
    FD_HEADROOM,
    FD_LIMIT,
    STALL_SECONDS,
    HTTPProtocol,
    Message,
    Send,
    WebSocketProtocol,
    _HTTPConnection,
    check_uvicorn,
    http_protocol,
    subscriber_limit,
)

__all__ = [
    "CLOSE_SECONDS",
    "FD_HEADROOM",
    "FD_LIMIT",
    "STALL_SECONDS",
    "ASGITransport",
    "HTTPProtocol",
    "Kind",
    "Transport",
    "UvicornWebSocket",
    "WebSocketProtocol",
    "check_uvicorn",
    "for_sse",
    "for_websocket",
    "http_protocol",
    "subscriber_limit",
    "watch_departure",
]

Kind = Literal["ws", "sse"]
WRITE_BATCH = 64 << 10  # bytes of replayed frames written at once, at most


class Transport(Protocol):
    """Where one subscriber's messages go (centrifuge's `Transport`, in Python)."""

    kind: Kind

    def write_now(self, event: Event) -> bool:
        """Write the event now if the socket takes it without waiting; never blocks."""
        ...

    def write_some_now(self, events: Sequence[Event]) -> int:
        """Write the first of `events` now, as many in one write as the transport can
        (a replay's chunk); how many were written. Never blocks."""
        ...

    def write_all_now(self, events: Sequence[Event], frames: bytes | None) -> bool:
        """Write every one of `events` now in one write, if the socket takes it without
        waiting; `frames` are their frames joined, when the caller has them. False where
        each message is a send of its own (ASGI). Never blocks."""
        ...

    @property
    def backed_up(self) -> bool:
        """Bytes of an earlier write still wait: a stall began with that write."""
        ...

    async def write(self, event: Event) -> None:
        """Write once the socket can take it; OSError when the connection is gone."""
        ...

    async def close(self, code: int, *, stalled: bool = False) -> None:
        """Send the last message within CLOSE_SECONDS, else abort; abort at once if stalled."""
        ...

    def abort(self) -> None:
        """Drop the connection now, unsent bytes and all."""
        ...


async def _goodbye(transport: Transport, last: Coroutine[Any, Any, None], stalled: bool) -> None:
    # A peer that stopped reading never takes the last frame, and after a stalled write
    # it would only queue behind the stall: cut it.
    if stalled:
        last.close()
    else:
        with anyio.move_on_after(CLOSE_SECONDS) as late:
            with contextlib.suppress(OSError):
                await last
        if not late.cancelled_caught:
            return
    transport.abort()


class UvicornWebSocket:
    """Whole frames straight onto a uvicorn WebSocket connection's socket."""

    __slots__ = ("_protocol", "_socket")
    kind: Kind = "ws"

    def __init__(self, protocol: WebSocketProtocol) -> None:
        self._protocol = protocol
        self._socket: asyncio.WriteTransport = protocol.transport

    def write_now(self, event: Event) -> bool:
        # The fan-out calls this once per subscriber and event: C calls only.
        socket = self._socket
        if socket.get_write_buffer_size() or socket.is_closing() or self._protocol.close_sent:
            return False
        socket.write(event.ws_frame)
        return True

    def write_some_now(self, events: Sequence[Event]) -> int:
        # One write for a replay's frames, not one each: resuming 10,000 subscribers at
        # once is 1,000,000 frames. At most WRITE_BATCH bytes, so the remainder the
        # kernel does not take at once stays small (MAX_UNSENT).
        socket = self._socket
        if socket.get_write_buffer_size() or socket.is_closing() or self._protocol.close_sent:
            return 0
        frames: list[bytes] = []
        size = 0
        for event in events:
            frame = event.ws_frame
            if frames and size + len(frame) > WRITE_BATCH:
                break
            frames.append(frame)
            size += len(frame)
        socket.write(b"".join(frames))  # one frame: joined without a copy
        return len(frames)

    def write_all_now(self, events: Sequence[Event], frames: bytes | None) -> bool:
        socket = self._socket
        if socket.get_write_buffer_size() or socket.is_closing() or self._protocol.close_sent:
            return False
        socket.write(frames if frames is not None else b"".join([e.ws_frame for e in events]))
        return True

    @property
    def backed_up(self) -> bool:
        # With no write buffer allowed (see WebSocketProtocol), the socket is paused
        # exactly while the kernel has not taken a frame whole.
        return self._socket.get_write_buffer_size() > 0

    async def write(self, event: Event) -> None:
        protocol = self._protocol
        while not protocol.writable.is_set():
            await protocol.writable.wait()  # set again on connection_lost, too
        if protocol.close_sent or protocol.disconnected or self._socket.is_closing():
            raise ConnectionResetError("the connection is closing")
        self._socket.write(event.ws_frame)

    async def close(self, code: int, *, stalled: bool = False) -> None:
        last = self._protocol.send({"type": "websocket.close", "code": code})
        await _goodbye(self, last, stalled)

    def abort(self) -> None:
        self._socket.abort()


class _Begun:
    """A send the fan-out started that suspended: the subscriber's writer finishes it."""

    __slots__ = ("coro", "event", "waiting")

    def __init__(self, event: Event, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        self.event = event
        self.coro = coro
        self.waiting = waiting  # the future the send is blocked on

    def __await__(self) -> Generator[Any, None, None]:
        # Hand the future to the awaiting task; once it is done, carry the send on there.
        yield self.waiting
        yield from self.coro.__await__()


class ASGITransport:
    """Through an ASGI `send`: a send that completes without suspending (the peer reads)
    is stepped once by the fan-out; one that suspends is finished by the writer."""

    __slots__ = ("_abort", "_begun", "_end", "_pick", "_send", "kind")

    def __init__(
        self,
        kind: Kind,
        send: Send,
        pick: Callable[[Event], Message],
        end: Message,
        abort: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        self._send = send
        self._pick = pick
        self._end = end
        self._abort = abort
        self._begun: _Begun | None = None

    def write_now(self, event: Event) -> bool:
        if self._begun is not None:
            return False
        coro = self._send(self._pick(event))
        try:
            waiting = coro.send(None)
        except StopIteration:
            return True
        except BaseException:
            coro.close()
            raise
        self._begun = _Begun(event, coro, waiting)
        return False

    def write_some_now(self, events: Sequence[Event]) -> int:
        return 1 if events and self.write_now(events[0]) else 0  # one message per send

    def write_all_now(self, events: Sequence[Event], frames: bytes | None) -> bool:
        return False  # one message per send: offered one by one

    @property
    def backed_up(self) -> bool:
        return False

    async def write(self, event: Event) -> None:
        begun, self._begun = self._begun, None
        if begun is not None:
            if begun.event is event:
                await begun
                return
            begun.coro.close()  # never happens: the writer takes events in order
        await self._send(self._pick(event))

    async def close(self, code: int, *, stalled: bool = False) -> None:
        if self._begun is not None:
            self._begun.coro.close()
            self._begun = None
        message = self._end if self.kind == "sse" else {**self._end, "code": code}
        await _goodbye(self, self._send(message), stalled)

    def abort(self) -> None:
        if self._abort is not None:
            self._abort()


_message: Callable[[Event], Message] = operator.attrgetter("message")
_sse: Callable[[Event], Message] = operator.attrgetter("sse")


def for_websocket(scope: Scope, send: Send) -> Transport:
    """The transport for an accepted WebSocket: straight to the socket when it can be."""
    protocol = scope.get("extensions", {}).get(CONNECTION)
    if not isinstance(protocol, WebSocketProtocol):
        return ASGITransport("ws", send, _message, {"type": "websocket.close"})
    # The handshake is over, and uvicorn keeps its request and response (their headers,
    # 3 KB) for the connection's life: it never reads them after the accept.
    protocol.request = None  # type: ignore[assignment]
    protocol.response = None  # type: ignore[assignment]
    if protocol.conn.extensions:  # compressed: each frame is the subscriber's own
        end = {"type": "websocket.close"}
        send = cast(Send, protocol.send)
        return ASGITransport("ws", send, _message, end, protocol.transport.abort)
    return UvicornWebSocket(protocol)


def watch_departure(scope: Scope, on_leave: Callable[[int], None]) -> bool:
    """Have the connection call `on_leave(code)` when the peer leaves, and drop what it
    sends, so that nothing need read `receive`; False where the server cannot (then
    read `receive` for the disconnect)."""
    protocol = scope.get("extensions", {}).get(CONNECTION)
    if not isinstance(protocol, WebSocketProtocol):
        return False
    protocol.watch(on_leave)
    return True


def for_sse(scope: Scope, send: Send) -> Transport:
    """The transport for a `text/event-stream` response whose headers went out."""
    end = {"type": "http.response.body", "body": b"", "more_body": False}
    connection = scope.get("extensions", {}).get(CONNECTION)
    if isinstance(connection, _HTTPConnection):
        return ASGITransport("sse", connection.send, _sse, end, connection.abort)
    return ASGITransport("sse", send, _sse, end)
