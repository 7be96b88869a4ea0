"""A test's own `redis-server` on a free port: started, killed, frozen and restarted at will.

Never the shared one on 6379. Nothing is kept on disk unless a test asks for AOF.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

from tests.conftest import FACTOR

READY_LINE = "Ready to accept connections"


class RedisServer:
    """`redis-server` in a subprocess; `start()` returns once it accepts connections."""

    def __init__(self, port: int, folder: Path, *, aof: bool = False) -> None:
        self.port = port
        self.folder = folder
        self.aof = aof
        self.lines: list[str] = []
        self.popen: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        # `--save ""`: no snapshots; a restart begins empty unless AOF keeps the data.
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else [
            "--appendonly", "no"
        ]  # fmt: skip
        return [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", *persistence, "--dir", str(self.folder), "--daemonize", "no",
        ]  # fmt: skip

    def start(self, seconds: float = 10) -> None:
        """Start on the same port as before; blocks until Redis is ready (call in a thread)."""
        assert self.popen is None or self.popen.poll() is not None, "already running"
        ready = threading.Event()
        self.popen = subprocess.Popen(
            self.args(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        stream = self.popen.stdout
        assert stream is not None

        def read() -> None:
            for line in stream:
                self.lines.append(line)
                if READY_LINE in line:
                    ready.set()
            ready.set()  # it ended: stop waiting
            stream.close()

        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(seconds * FACTOR), "redis-server did not start"
        assert self.popen.poll() is None, "".join(self.lines)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; every client connection drops."""
        assert self.popen is not None
        self.popen.kill()
        self.popen.wait(10 * FACTOR)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing is answered."""
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.thaw()
            self.kill()
