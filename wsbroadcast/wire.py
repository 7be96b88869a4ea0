"""A WebSocket connection's transport, written to directly with frames built once for all.

uvicorn's websockets-sansio `send` builds each frame anew for each subscriber, through a
coroutine and an ASGI message. A frame from server to client is never masked (RFC 6455
5.1), so with compression off the same bytes serve every subscriber: the fan-out writes
them to each transport itself, after the same checks that `send` makes, and leaves the
rest (handshake, pings, close) to uvicorn.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class Wire:
    """Whole frames straight to one connection's transport."""

    __slots__ = ("_protocol", "_transport")

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol
        self._transport: asyncio.WriteTransport = protocol.transport
        # The kernel's socket buffer is the only write buffer: a frame it cannot take whole
        # pauses the transport at once, so a stall (the contract's 5 s) is timed from that
        # frame, not from 64 KiB later.
        self._transport.set_write_buffer_limits(high=0)

    @classmethod
    def of(cls, send: Any) -> Wire | None:
        """The wire behind uvicorn's `send`; None for any other server or with compression."""
        protocol = getattr(send, "__self__", None)
        if not isinstance(protocol, WebSocketsSansIOProtocol) or protocol.conn.extensions:
            return None
        return cls(protocol)

    @property
    def paused(self) -> bool:
        """The kernel did not take the last frame whole: the next one must wait.

        With no write buffer allowed, the transport is paused exactly while it holds bytes.
        """
        return self._transport.get_write_buffer_size() > 0

    def write(self, frame: bytes) -> bool:
        """Write a whole frame now if the transport takes it; never blocks."""
        # The fan-out calls this once per subscriber and event: C calls only.
        transport = self._transport
        if transport.get_write_buffer_size() or transport.is_closing() or self._protocol.close_sent:
            return False
        transport.write(frame)
        return True

    async def send(self, frame: bytes) -> None:
        """Write a whole frame once the transport can take it; OSError once it is closing."""
        protocol = self._protocol
        while not protocol.writable.is_set():
            await protocol.writable.wait()  # set again on connection_lost, too
        if protocol.close_sent or protocol.disconnected or self._transport.is_closing():
            raise ClientDisconnected("the connection is closing")
        self._transport.write(frame)
