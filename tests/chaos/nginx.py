"""Debian's nginx, started by a test with its own prefix and the configuration docs/deploy.md
gives (TLS swapped for a loopback port), never a system service. `make install-nginx` unpacks
Debian's package into .venv (no service installed or started)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import anyio
import httpx

from tests.chaos.harness import Instance
from tests.conftest import FACTOR, free_port, within

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "docs" / "deploy.md"
UNPACKED = ROOT / ".venv" / "nginx" / "usr" / "sbin" / "nginx"  # `make install-nginx`


def documented_config() -> str:
    """The nginx example of docs/deploy.md, as written there."""
    text = DEPLOY.read_text()
    section = text[text.index("### nginx example") :]
    match = re.search(r"```nginx\n(.*?)```", section, re.DOTALL)
    assert match, "docs/deploy.md has an nginx example"
    return match.group(1)


def for_loopback(config: str, port: int, upstreams: Sequence[int]) -> str:
    """The documented config with its servers on `upstreams` and plain HTTP on `port`."""
    servers = iter(upstreams)
    lines = []
    for line in config.splitlines():
        stripped = line.strip()
        if stripped.startswith("ssl_certificate"):
            continue
        if stripped.startswith("listen "):
            line = f"    listen 127.0.0.1:{port};"
        elif re.match(r"server \d+\.\d+\.\d+\.\d+:\d+", stripped):
            line = re.sub(r"\d+\.\d+\.\d+\.\d+:\d+", f"127.0.0.1:{next(servers)}", line)
        lines.append(line)
    assert next(servers, None) is None, "the example names one server per instance"
    return "\n".join(lines)


class Nginx:
    """nginx in the foreground with its own prefix; quacks like an Instance for clients."""

    def __init__(self, prefix: Path, upstreams: Sequence[Instance]) -> None:
        self.name = "nginx"
        self.port = free_port()
        self.prefix = prefix
        self.up = False
        self.popen: subprocess.Popen[bytes] | None = None
        site = for_loopback(documented_config(), self.port, [u.port for u in upstreams])
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must write the prefix
        temp = "".join(
            f"    {kind}_temp_path {prefix}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (prefix / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\n"
            f"error_log {prefix}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            "    log_format chaos '$status $request_method $request_uri $upstream_addr';\n"
            f"    access_log {prefix}/access.log chaos;\n{temp}{site}\n}}\n"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> None:
        binary = str(UNPACKED) if UNPACKED.exists() else shutil.which("nginx") or "nginx"
        self.popen = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [binary, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
             "-e", str(self.prefix / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        async with httpx.AsyncClient(timeout=2 * FACTOR) as http:
            with within(15):
                while True:
                    assert self.popen.poll() is None, self.error_log()
                    try:
                        await http.get(f"{self.url}/healthz")
                        break
                    except httpx.TransportError:
                        await anyio.sleep(0.05)  # polled: nginx says nothing when it listens
        self.up = True

    def statuses(self) -> list[int]:
        """Every status nginx answered, from its access log."""
        log = self.prefix / "access.log"
        if not log.exists():
            return []
        return [int(line.split()[0]) for line in log.read_text().splitlines() if line]

    def error_log(self) -> str:
        log = self.prefix / "error.log"
        return log.read_text() if log.exists() else ""

    def stop(self) -> None:
        self.up = False
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10 * FACTOR)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        if self.popen is not None and self.popen.stderr:
            self.popen.stderr.close()
