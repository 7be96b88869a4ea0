"""How an event's bytes reach a subscriber's socket: one Transport per connection kind.

- `UvicornWebSocket`: the fan-out writes each event's frame, built once for all (a frame
  from server to client is never masked, RFC 6455 5.1), straight onto the connection's
  socket. The only code that knows uvicorn's protocol classes is in this module: the
  protocol subclasses that `cli` hands uvicorn put the connection in the ASGI scope's
  `extensions`, and `check_uvicorn` names every attribute relied on.
- `ASGITransport`: the plain ASGI `send`, for any other server, a connection that
  negotiated compression, and Server-Sent Events.

The hub never awaits a transport: `write_now` writes or declines at once; only a
subscriber's own writer awaits `write`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import resource
import time
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any, Literal, Protocol, cast

import anyio
from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import Protocol as Frames

from .events import Event

logger = logging.getLogger("wsbroadcast")

Kind = Literal["ws", "sse"]
Message = dict[str, Any]
Send = Callable[[Message], Coroutine[Any, Any, None]]
CONNECTION = "wsbroadcast.connection"  # scope["extensions"] key set by the protocols below
CLOSE_SECONDS = 2.0  # a last frame that cannot get out in this long: abort the connection
STALL_SECONDS = 5.0  # a write stalled this long closes the subscriber (contract: 5 s)
MAX_UNSENT = 1 << 20  # bytes a connection may have waiting, control frames included
HEADER_SECONDS = 10.0  # a request's headers must arrive whole within this
WRITE_BATCH = 64 << 10  # bytes of replayed frames written at once, at most
# WebSocket handshakes in progress at once per server; the rest wait, unread. Enough to
# keep the connect rate (bench connect), few enough that a reconnect storm leaves live
# fan-outs their share of each turn of the event loop.
HANDSHAKES = 16


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

    def write_joined_now(self, frames: bytes) -> bool:
        """Write several events' WebSocket frames, joined, now in one write, if the socket
        takes it without waiting. False where each message is a send of its own (ASGI).
        Never blocks."""
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

    def write_joined_now(self, frames: bytes) -> bool:
        socket = self._socket
        if socket.get_write_buffer_size() or socket.is_closing() or self._protocol.close_sent:
            return False
        socket.write(frames)
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

    def write_joined_now(self, frames: bytes) -> bool:
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


# --- uvicorn: the protocol classes `cli` hands the server -------------------------------

# What this module relies on, checked on the installed uvicorn by `check_uvicorn`.
WEBSOCKET_NAMES = (
    "transport",
    "writable",
    "close_sent",
    "disconnected",
    "conn",
    "send",
    "handle_connect",
    "handle_ping",
    "handshake_initiated",
    "handshake_complete",
    "connection_made",
    "connection_lost",
    "pause_writing",
    "resume_writing",
    "queue",
    "receive",
    "read_paused",
    "frames",
    "send_receive_event_to_app",
)
HTTP_NAMES = (
    "transport",
    "scope",
    "cycle",
    "connection_made",
    "connection_lost",
    "on_message_begin",
    "on_headers_complete",
    "on_response_complete",
    "handle_websocket_upgrade",
    "parser",
    "server_state",
    "loop",
)
_last_warned = 0.0


class _Guard:
    """Aborts a socket whose unsent bytes wait 7 s or pass MAX_UNSENT.

    uvicorn writes a pong for every ping whatever its buffer holds, and closes a timed-out
    connection by waiting for the buffer to flush: a client that pings and never reads
    would grow the server's memory without bound.
    """

    __slots__ = ("loop", "socket", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, socket: asyncio.Transport) -> None:
        self.loop = loop
        self.socket = socket
        self.timer: asyncio.TimerHandle | None = None

    def paused(self) -> None:
        # Later than a subscriber's own stall deadline, which closes it with 1013: this one
        # is for what no writer times, pongs and a close frame that never drain.
        if self.timer is None:
            self.timer = self.loop.call_later(STALL_SECONDS + CLOSE_SECONDS, self.socket.abort)

    def resumed(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def check(self) -> None:
        if self.socket.get_write_buffer_size() > MAX_UNSENT:
            self.socket.abort()


class _Handshakes:
    """WebSocket handshakes in progress on one server, at most HANDSHAKES; the rest wait
    their turn with reading paused, in arrival order. When thousands reconnect at once
    (a deploy), each turn of the event loop then holds a bounded share of their work,
    and the live events of the connected ones go out in between."""

    __slots__ = ("active", "waiting")

    def __init__(self) -> None:
        self.active = 0
        self.waiting: dict[HTTPProtocol, None] = {}  # a queue a departure can leave

    @staticmethod
    def of(server_state: Any) -> _Handshakes:
        handshakes: _Handshakes | None = getattr(server_state, "wsb_handshakes", None)
        if handshakes is None:
            handshakes = server_state.wsb_handshakes = _Handshakes()
        return handshakes

    def begin(self, protocol: HTTPProtocol) -> None:
        if self.active < HANDSHAKES and not self.waiting:
            self.active += 1
            protocol.upgrade_now()
        else:
            protocol.transport.pause_reading()
            self.waiting[protocol] = None

    def end(self) -> None:
        self.active -= 1
        while self.waiting and self.active < HANDSHAKES:
            protocol = next(iter(self.waiting))
            del self.waiting[protocol]
            self.active += 1
            protocol.loop.call_soon(protocol.upgrade_now)

    def leave(self, protocol: HTTPProtocol) -> None:
        self.waiting.pop(protocol, None)


class _Inbox:
    """uvicorn's receive queue, lighter: an asyncio.Queue is 3 KB (four deques and an
    Event) on every connection. Once watched, nothing reads it: a data message is dropped
    and the peer's leaving told to `on_leave`, so a receive-only subscriber needs no task
    to read (contract: messages from a client are read and ignored)."""

    __slots__ = ("items", "on_leave", "waiter")

    def __init__(self) -> None:
        self.items: list[Message] = []
        self.waiter: asyncio.Future[None] | None = None
        self.on_leave: Callable[[int], None] | None = None

    def put_nowait(self, message: Message) -> None:
        if self.on_leave is None:
            self.items.append(message)
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)
        elif message["type"] == "websocket.disconnect":
            on_leave, self.on_leave = self.on_leave, _ignore
            on_leave(int(message.get("code") or 1005))

    def empty(self) -> bool:
        return not self.items

    async def get(self) -> Message:
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.items.pop(0)


def _ignore(code: int) -> None:
    pass


class _Flag:
    """The part of asyncio.Event uvicorn uses for `writable`, without the Event's deque
    (760 bytes on every connection): waiters are kept only while there are some."""

    __slots__ = ("_is_set", "_waiters")

    def __init__(self) -> None:
        self._is_set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        self._is_set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._is_set = False

    async def wait(self) -> bool:
        if not self._is_set:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)
        return True


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, with its connection in the scope, a bound
    on what it may have unsent, and a receive queue that can stop being read."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.queue: _Inbox = _Inbox()  # type: ignore[assignment]
        self.writable: _Flag = _Flag()  # type: ignore[assignment]
        # Made by an upgrade that took a handshake slot (see HTTPProtocol): given back
        # once the app has answered the handshake, or the connection is gone.
        self.handshakes: _Handshakes | None = _Handshakes.of(server_state)

    def _handshake_over(self) -> None:
        if self.handshakes is not None:
            self.handshakes.end()
            self.handshakes = None

    async def send(self, message: Message) -> None:  # type: ignore[override]
        self._handshake_over()  # the accept (or the refusal): the handshake is answered
        await super().send(message)  # type: ignore[arg-type]

    def watch(self, on_leave: Callable[[int], None]) -> None:
        """From now on nothing reads this connection: `on_leave(code)` is called when the
        peer leaves (at once if it has), and what it sends is read and dropped."""
        inbox = self.queue
        waiting, inbox.items = inbox.items, []
        inbox.on_leave = on_leave
        for message in waiting:  # data dropped; a disconnect told
            inbox.put_nowait(message)
        if self.read_paused:  # uvicorn stops reading until its last message is taken
            self.read_paused = False
            self.transport.resume_reading()

    def send_receive_event_to_app(self) -> None:
        if self.queue.on_leave is None:
            super().send_receive_event_to_app()
        else:
            self.frames = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # The kernel's socket buffer is the only write buffer: a frame it cannot take whole
        # pauses the socket at once, so a stall is timed from that frame, not 64 KiB later.
        self.transport.set_write_buffer_limits(high=0)
        self.guard = _Guard(self.loop, self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._handshake_over()
        self.guard.resumed()
        super().connection_lost(exc)
        _forget(getattr(self, "scope", None))

    def pause_writing(self) -> None:
        super().pause_writing()
        self.guard.paused()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.guard.resumed()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # A refused handshake has no scope. The ASGI task is created, not yet run. Where
        # a uvicorn names these otherwise, the endpoint falls back to the ASGI send.
        response = getattr(self, "response", None)
        scope = getattr(self, "scope", None)
        if getattr(response, "status_code", None) == 101 and isinstance(scope, dict):
            scope.setdefault("extensions", {})[CONNECTION] = self
            self._forget_request()
        else:  # websockets refused it: answered, and no app will run
            self._handshake_over()

    def _forget_request(self) -> None:
        # websockets' parser keeps the handshake request (2 KB of headers) in its frame
        # for the connection's life. Nothing read yet past the request (uvicorn's upgrade
        # hands over the request alone) means the parser waits at the start of a frame
        # with nothing consumed: a frame parser of its own takes over from exactly there.
        conn = self.conn
        if not conn.reader.buffer:
            parser = Frames.parse(conn)
            next(parser)
            conn.parser = parser

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # websockets refused the request itself (a request line over 8 KiB, headers too
        # large, not HTTP): its 414 or 431 is queued, and uvicorn never writes it, so the
        # connection would hang open with no answer.
        if self.conn.handshake_exc is not None and not self.handshake_initiated:
            if not self.close_sent:
                self.transport.write(b"".join(self.conn.data_to_send()))
                self.handshake_complete = self.close_sent = True
                self.transport.close()

    def handle_ping(self) -> None:
        super().handle_ping()
        self.guard.check()


class _HTTPConnection:
    """What an SSE response needs of its uvicorn connection: the raw send, and abort."""

    __slots__ = ("abort", "send")

    def __init__(self, send: Send, abort: Callable[[], None]) -> None:
        self.send = send
        self.abort = abort


class HTTPProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline on each request's headers (uvicorn has
    none: a client could hold connections open forever) and its connection in the scope."""

    header_seconds = HEADER_SECONDS
    header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()
        _warn_near_fd_limit(len(self.connections))

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        _Handshakes.of(self.server_state).leave(self)
        _forget(self.cycle and self.cycle.scope)
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        _forget(self.cycle and self.cycle.scope)
        super().on_response_complete()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # each request on a kept-alive connection has the same deadline

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # not an upgrade
            connection = _HTTPConnection(cast(Send, cycle.send), self.transport.abort)
            scope = cast(dict[str, Any], self.scope)
            scope.setdefault("extensions", {})[CONNECTION] = connection

    def handle_websocket_upgrade(self) -> None:
        self._disarm()
        _Handshakes.of(self.server_state).begin(self)

    def upgrade_now(self) -> None:
        """Hand the connection to the WebSocket protocol: its handshake's turn has come."""
        if self.transport.is_closing():  # it left while waiting: the turn passes on
            _Handshakes.of(self.server_state).end()
            return
        self.transport.resume_reading()
        super().handle_websocket_upgrade()
        # The WebSocket protocol has the socket now. The parser's callbacks hold this
        # protocol, which holds the parser: uvicorn breaks that cycle on connection_lost,
        # never called after an upgrade, so without this each WebSocket connection's
        # HTTP half waits for the collector's rarest pass.
        self.parser = None  # type: ignore[assignment]

    def _arm(self) -> None:
        if self.header_timer is None:
            self.header_timer = self.loop.call_later(self.header_seconds, self.transport.abort)

    def _disarm(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None


def _forget(scope: Any) -> None:
    """Take a finished connection out of its scope: the connection holds the scope (the
    WebSocket protocol; an SSE response's `send`, through its request), a cycle that only
    the collector's rarest pass would free, with the whole connection behind it."""
    if isinstance(scope, dict):
        scope.get("extensions", {}).pop(CONNECTION, None)


def http_protocol(header_seconds: float) -> type[HTTPProtocol]:
    """HTTPProtocol with another header deadline (WSB_HEADER_TIMEOUT)."""
    return type("HTTPProtocol", (HTTPProtocol,), {"header_seconds": header_seconds})


FD_HEADROOM = 64  # descriptors beside connections: listeners, Redis, logs, the loop


def _warn_near_fd_limit(connections: int) -> None:
    """Once a minute at most: accepting fails silently when descriptors run out."""
    global _last_warned
    if connections + FD_HEADROOM < FD_LIMIT:
        return
    now = time.monotonic()
    if now - _last_warned >= 60.0:
        _last_warned = now
        logger.warning(
            "%d connections open, near the file descriptor limit of %d: new connections "
            "will fail; raise the limit (ulimit -n) or lower WSB_MAX_CONNECTIONS",
            connections,
            FD_LIMIT,
        )


def fd_limit() -> int:
    """This process's soft limit on open files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 30


FD_LIMIT = fd_limit()


def subscriber_limit(max_connections: int) -> int:
    """WSB_MAX_CONNECTIONS, kept below the file limit: past it accepting fails silently,
    `/healthz` included, so refuse subscribers (1013, 503) while descriptors remain for
    handshakes, refusals, health checks and publishing."""
    return max(1, min(max_connections, FD_LIMIT - FD_HEADROOM))


def check_uvicorn() -> list[str]:
    """The names this module relies on that the installed uvicorn lacks (none: all well)."""
    import uvicorn
    from uvicorn.server import ServerState

    config = uvicorn.Config(app=_noop, log_config=None, http="httptools", ws="websockets-sansio")
    config.load()
    loop = asyncio.new_event_loop()
    try:
        state = ServerState()
        missing = []
        ws = WebSocketsSansIOProtocol(config, state, {}, _loop=loop)
        missing += [f"WebSocketsSansIOProtocol.{n}" for n in WEBSOCKET_NAMES if not hasattr(ws, n)]
        for name in ("extensions", "handshake_exc", "parser", "reader", "parse"):
            if not hasattr(getattr(ws, "conn", None), name):
                missing.append(f"WebSocketsSansIOProtocol.conn.{name}")
        if not hasattr(getattr(getattr(ws, "conn", None), "reader", None), "buffer"):
            missing.append("WebSocketsSansIOProtocol.conn.reader.buffer")
        http = HttpToolsProtocol(config, state, {}, _loop=loop)
        missing += [f"HttpToolsProtocol.{n}" for n in HTTP_NAMES if not hasattr(http, n)]
        return missing
    finally:
        loop.close()


async def _noop(scope: Scope, receive: Any, send: Any) -> None:
    pass  # pragma: no cover - only loaded, never called
