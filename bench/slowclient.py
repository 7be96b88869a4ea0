"""Subscribers that connect and never read, and a watch on what the server does with them.

Each socket gets a small receive buffer before connecting (so the window stays small and the
server's writes really stall on loopback), completes the WebSocket handshake, then is never read.
Several times a second it samples, for each socket: bytes waiting in its receive queue
(`FIONREAD`) and its TCP state (`TCP_INFO`), and from `/proc/net/tcp` the server side of the same
connection: its state, its send queue, and whether a process still holds it (inode 0 = orphaned,
i.e. the server closed its end). At the end it drains each socket to see what arrived, a 1013
close frame included. Driven by JSON lines on stdin, like loadgen.py.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import resource
import socket
import struct
import sys
import termios
import time
from typing import Any

TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
}
MARK = b'"@'


class Slow:
    def __init__(self, sock: socket.socket, port: int) -> None:
        self.sock = sock
        self.port = port  # our local port: the server side's remote port
        self.samples: list[
            tuple[float, int, int, int, int, int]
        ] = []  # t, rcvq, state, s_txq, s_state, s_held

    def sample(self, now: float, server: dict[int, tuple[int, int, int]]) -> None:
        try:
            rcvq = struct.unpack("i", fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, b"\0" * 4))[
                0
            ]
        except OSError:
            rcvq = -1
        info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        state = info[0]
        s_state, s_txq, s_inode = server.get(self.port, (0, 0, 0))
        row = (now, rcvq, state, s_txq, s_state, 1 if s_inode else 0)
        if not self.samples or self.samples[-1][1:] != row[1:]:
            self.samples.append(row)


def server_side(server_port: int) -> dict[int, tuple[int, int, int]]:
    """remote port -> (state, tx_queue, inode) for the server's end of each connection."""
    out: dict[int, tuple[int, int, int]] = {}
    want = f":{server_port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if not parts[1].endswith(want):
                continue
            rport = int(parts[2].rsplit(":", 1)[1], 16)
            txq = int(parts[4].split(":")[0], 16)
            out[rport] = (int(parts[3], 16), txq, int(parts[9]))
    return out


def open_slow(port: int, path: str, rcvbuf: int, mss: int) -> Slow:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Before connect, so the handshake carries them: a small window, and an Ethernet-sized MSS.
    # Loopback's 64 KiB MSS would let the server's kernel size its send buffer at ~1-2 MB per
    # connection (2 x 10 segments), enough to swallow a whole run without a write stalling.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: nothing of the stream after the head is read
        if not chunk:
            raise ConnectionError("closed during handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    sock.setblocking(False)
    return Slow(sock, sock.getsockname()[1])


def drain_all(slows: list[Slow], budget: float) -> list[dict[str, Any]]:
    """Read what each socket holds (for up to `budget` s in all): count events, find a close."""
    bufs = [bytearray() for _ in slows]
    outcome: list[str | None] = [None] * len(slows)
    end = time.monotonic() + budget
    while time.monotonic() < end and any(o is None for o in outcome):
        got = False
        for k, sl in enumerate(slows):
            if outcome[k] is not None:
                continue
            try:
                chunk = sl.sock.recv(1 << 16)
            except BlockingIOError:
                continue
            except OSError as exc:
                outcome[k] = f"error: {os.strerror(exc.errno or 0)}"
                continue
            if not chunk:
                outcome[k] = "eof"
            else:
                bufs[k] += chunk
                got = True
        if not got:
            time.sleep(0.01)
    return [
        dict(parse_frames(b), read_end=o or "still open")
        for b, o in zip(bufs, outcome, strict=True)
    ]


def parse_frames(buf: bytearray) -> dict[str, Any]:
    """Server frames (unmasked): how many events, and the close code if a close frame came."""
    events, close_code, i = 0, None, 0
    while i + 2 <= len(buf):
        op, n = buf[i] & 0x0F, buf[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            n, j = int.from_bytes(buf[j : j + 2], "big"), j + 2
        elif n == 127:
            n, j = int.from_bytes(buf[j : j + 8], "big"), j + 8
        if j + n > len(buf):
            break
        if op == 1 and buf.find(MARK, j, j + n) >= 0:
            events += 1
        elif op == 8 and n >= 2:
            close_code = int.from_bytes(buf[j : j + 2], "big")
        i = j + n
    return {"drained_bytes": len(buf), "events_received": events, "close_code": close_code}


def summarize(slow: Slow) -> dict[str, Any]:
    """When its buffers filled, when the server let go of it, and how."""
    s = slow.samples
    live = [r for r in s if r[2] == 1 and r[4] == 1 and r[5] == 1]
    rcv_max = max((r[1] for r in live), default=0)
    txq_max = max((r[3] for r in live), default=0)
    t_rcv_full = next((r[0] for r in live if r[1] == rcv_max), None)
    t_srv_full = next((r[0] for r in live if r[3] == txq_max), None)
    ended = next((r for r in s if not (r[2] == 1 and r[4] == 1 and r[5] == 1)), None)
    how = None
    if ended is not None:
        if ended[2] == 7:
            how = "reset (client saw RST)"
        elif ended[2] == 8:
            how = "fin (client saw FIN)"
        elif ended[4] == 0:
            how = "server socket gone"
        elif ended[5] == 0:
            how = f"server closed its end ({TCP_STATES.get(ended[4], ended[4])}, orphaned)"
        else:
            how = f"server side {TCP_STATES.get(ended[4], ended[4])}"
    full = max(t for t in (t_rcv_full, t_srv_full) if t is not None) if live else None
    return {
        "port": slow.port,
        "client_rcvq_max": rcv_max,
        "server_sendq_max": txq_max,
        "t_buffers_full": full,
        "t_released": ended[0] if ended else None,
        "released": how,
        "final_client_state": TCP_STATES.get(s[-1][2], s[-1][2]) if s else None,
    }


async def serve() -> None:
    slows: list[Slow] = []
    server_port = 0
    monitor: asyncio.Task[None] | None = None
    stop = asyncio.Event()

    async def watch(interval: float) -> None:
        while not stop.is_set():
            now = time.time()
            server = server_side(server_port)
            for sl in slows:
                sl.sample(now, server)
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    reply({"ready": True, "pid": os.getpid(), "cpu": cpu()})
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "connect":
            server_port = cmd["port"]
            errors: list[str] = []
            for _ in range(cmd["n"]):
                try:
                    slows.append(
                        open_slow(server_port, cmd.get("path", "/ws"), cmd["rcvbuf"], cmd["mss"])
                    )
                except OSError as exc:
                    errors.append(str(exc))
            rcvbuf = slows[0].sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) if slows else 0
            reply({"ok": len(slows), "errors": errors, "effective_rcvbuf": rcvbuf})
        elif op == "watch":
            stop.clear()
            monitor = asyncio.create_task(watch(cmd.get("interval", 0.2)))
            reply({"ok": True})
        elif op == "report":
            stop.set()
            if monitor is not None:
                await monitor
            now = time.time()
            server = server_side(server_port)
            for sl in slows:
                sl.sample(now, server)
            rows = [summarize(sl) for sl in slows]
            if cmd.get("drain", True):
                for row, got in zip(
                    rows, drain_all(slows, cmd.get("drain_budget", 2.0)), strict=True
                ):
                    row.update(got)
            reply({"slow": rows, "cpu": cpu()})
        elif op == "close":
            for sl in slows:
                sl.sock.close()
            reply({"ok": True})
            break
        else:
            reply({"error": f"unknown op {op!r}"})


if __name__ == "__main__":
    asyncio.run(serve())
