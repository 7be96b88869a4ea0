"""The publishing side of the benchmark: a small keep-alive HTTP/1.1 client for `POST /events`.

Each event carries its send time in `data.ts` as `"@<unix µs>"`, stamped just before its request
is written, so a subscriber's latency runs from before the POST to receipt. Back-to-back posting
awaits each answer; open-loop posting sends on a fixed schedule whatever the server answers, over
as many connections as it needs (up to a cap), and counts a POST with no answer within the
timeout as hung.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

KEEP_ALIVE_S = 2.0  # reuse a connection idle for less than this


def event_body(seq: int, pad: int) -> bytes:
    """One `system_notification` with a `ts` placeholder; `stamp()` fills it at send time."""
    data = {"message": "x" * max(1, pad), "level": "info", "seq": seq, "ts": "@0000000000000000"}
    return json.dumps({"type": "system_notification", "data": data}, separators=(",", ":")).encode()


def stamp(body: bytes) -> bytes:
    return body.replace(b"@0000000000000000", b"@%016d" % (time.time_ns() // 1000), 1)


class HttpConn:
    """One keep-alive connection; one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.last_used = time.monotonic()

    @classmethod
    async def open(cls, port: int) -> HttpConn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        length = 0
        for line in raw.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        self.last_used = time.monotonic()
        return status, payload

    def close(self) -> None:
        self.writer.close()


@dataclass
class PostLog:
    """What happened to the POSTs of one phase."""

    sent: int = 0
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    hung: int = 0
    not_sent: int = 0  # open loop: every connection was taken by a hung POST
    seconds: list[float] = field(default_factory=list)
    first_sent_at: float = 0.0
    last_answer_at: float = 0.0

    def summary(self) -> dict[str, object]:
        s = sorted(self.seconds)
        return {
            "sent": self.sent,
            "accepted": self.accepted,
            "refused": self.refused,
            "hung": self.hung,
            "not_sent": self.not_sent,
            "post_p50_ms": round(1000 * s[len(s) // 2], 2) if s else None,
            "post_max_ms": round(1000 * s[-1], 2) if s else None,
        }


class Publisher:
    """POSTs events to one server, over a pool of keep-alive connections."""

    def __init__(self, port: int, path: str = "/events", max_conns: int = 256) -> None:
        self.port = port
        self.path = path
        self.max_conns = max_conns
        self.idle: list[HttpConn] = []
        self.busy = 0

    async def post(self, body: bytes, log: PostLog, within: float) -> None:
        conn = self.take()
        self.busy += 1
        log.sent += 1
        t = time.time()
        if not log.first_sent_at:
            log.first_sent_at = t
        try:
            if conn is None:
                conn = await asyncio.wait_for(HttpConn.open(self.port), within)
            status, _ = await asyncio.wait_for(conn.request("POST", self.path, stamp(body)), within)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            log.hung += 1
            if conn is not None:
                conn.close()
            return
        finally:
            self.busy -= 1
        done = time.time()
        log.seconds.append(done - t)
        log.last_answer_at = done
        if status in (200, 202):
            log.accepted += 1
        else:
            log.refused[str(status)] = log.refused.get(str(status), 0) + 1
        self.idle.append(conn)

    def take(self) -> HttpConn | None:
        """An idle keep-alive connection that the server has not timed out (uvicorn closes
        one after 5 s idle), or None for a new one."""
        while self.idle:
            conn = self.idle.pop()
            if time.monotonic() - conn.last_used < KEEP_ALIVE_S:
                return conn
            conn.close()
        return None

    async def back_to_back(self, count: int, pad: int, first_seq: int, within: float) -> PostLog:
        log = PostLog()
        bodies = [event_body(first_seq + k, pad) for k in range(count)]
        for body in bodies:
            await self.post(body, log, within)
        return log

    async def open_loop(
        self,
        rate: float,
        count: int,
        pad: int,
        first_seq: int,
        within: float,
        stop: asyncio.Event | None = None,
        log: PostLog | None = None,
    ) -> PostLog:
        """`count` POSTs at `rate` per second on a fixed schedule; stops early if `stop` is set."""
        log = log if log is not None else PostLog()
        bodies = [event_body(first_seq + k, pad) for k in range(count)]
        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic() + 0.05
        for k, body in enumerate(bodies):
            if stop is not None and stop.is_set():
                break
            delay = start + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.busy >= self.max_conns:
                log.not_sent += 1
                continue
            tasks.append(asyncio.create_task(self.post(body, log, within)))
        await asyncio.gather(*tasks)
        return log

    async def get(self, path: str, within: float = 5.0) -> tuple[int, bytes]:
        conn = await asyncio.wait_for(HttpConn.open(self.port), within)
        try:
            return await asyncio.wait_for(conn.request("GET", path), within)
        finally:
            conn.close()

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()
