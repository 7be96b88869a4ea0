"""Where an idle connection's memory goes: tracemalloc over N idle subscribers, by file.

    python -m bench.heap [N]        # default 2,000; prints bytes per connection

The service runs in this process (uvicorn on uvloop, the CLI's settings) so that tracemalloc
sees its heap; the subscribers are raw sockets that complete the handshake and stay idle,
so their own objects stay out of the per-file figures. A companion to the memory scenario
(RSS), not a replacement: it shows the Python heap only.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import sys
import tracemalloc

import uvloop

from wsbroadcast.cli import build_server
from wsbroadcast.settings import Settings

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def subscribe(port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, HANDSHAKE)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += await loop.sock_recv(sock, 4096)
    if not answer.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"handshake refused: {answer[:80]!r}")
    return sock


async def main(n: int) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(2048)
    port = listener.getsockname()[1]
    settings = Settings(port=port, connect_rate=1e6, max_connections=n + 100, log_level="warning")
    server = build_server(settings, log_config=None)
    # Listening before uvicorn starts: the first clients wait in the backlog, no polling.
    serving = asyncio.create_task(server.serve([listener]))
    socks = [await subscribe(port) for _ in range(20)]  # warm: first-use caches
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    socks += [await subscribe(port) for _ in range(n)]
    await asyncio.sleep(1)  # every writer has started and gone idle
    gc.collect()
    diff = tracemalloc.take_snapshot().compare_to(before, "filename")
    print(f"{sum(d.size_diff for d in diff) / n:,.0f} bytes per idle connection (N={n})")
    for d in diff[:20]:
        print(
            f"{d.size_diff / n:8,.0f} B {d.count_diff / n:6.1f} objects  {d.traceback[0].filename}"
        )
    for sock in socks:
        sock.close()
    server.should_exit = True
    await serving
    listener.close()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
