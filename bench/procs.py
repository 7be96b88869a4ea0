"""The benchmark's processes: the server under test on core 0, the load generators on core 1.

`Server` starts either wsbroadcast (its own CLI) or the seed-design baseline, pinned with
`taskset`, and reads its CPU time and RSS from /proc. `Workers` drives loadgen.py processes and
`SlowClients` drives slowclient.py, both over JSON lines on their stdin/stdout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
SERVER_CORE = "0"
LOAD_CORE = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit, inherited by every process started after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def pin_self_to_load_core() -> None:
    """This process publishes: on the load core, and ahead of the workers when it wakes, so a
    back-to-back POST is not kept waiting behind the subscribers it shares the core with."""
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {int(LOAD_CORE)})
    with contextlib.suppress(OSError):  # needs root or CAP_SYS_NICE; children go back to 0
        os.setpriority(os.PRIO_PROCESS, 0, -10)


def nice_zero() -> list[str]:
    """A prefix that puts a child back at niceness 0 (this process may run at -10)."""
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    return ["nice", "-n", str(-mine)] if mine < 0 and shutil.which("nice") else []


def taskset(core: str) -> list[str]:
    return ["taskset", "-c", core] if shutil.which("taskset") else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_cli() -> Path:
    return VENV_BIN / "wsbroadcast"


def service_available() -> tuple[bool, str]:
    """True when `wsbroadcast --help` exits 0 (serving /healthz is checked at each start)."""
    cli = service_cli()
    if not cli.exists():
        return False, f"{cli} not found"
    try:
        done = subprocess.run([str(cli), "--help"], capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return False, "wsbroadcast --help timed out"
    if done.returncode != 0:
        return False, f"wsbroadcast --help exited {done.returncode}: {done.stderr[-300:]!r}"
    return True, "ok"


class Server:
    """One server process under test, on its own port, pinned to the server core."""

    def __init__(
        self,
        kind: str,
        client_buffer: int = 256,
        env: dict[str, str] | None = None,
        core: str = SERVER_CORE,
        name: str = "",
    ) -> None:
        self.kind = kind
        self.port = free_port()
        self.client_buffer = client_buffer
        self.env = env or {}  # settings beside the flags (the outbox scenario's URL)
        self.core = core  # two instances on one Redis take a core each
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = HERE / "results" / f"server-{name or kind}.log"

    def command(self) -> list[str]:
        if self.kind == "service":
            return [
                str(service_cli()),
                "--port",
                str(self.port),
                "--client-buffer",
                str(self.client_buffer),
                "--max-connections",
                "20000",
                "--connect-rate",
                "100000",
                "--heartbeat-seconds",
                "0",
                "--log-level",
                "warning",
            ]
        return [sys.executable, str(HERE / "baseline.py"), "--port", str(self.port)]

    def spawn(self) -> None:
        self.log_path.parent.mkdir(exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [*taskset(self.core), *nice_zero(), *self.command()],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                cwd=HERE.parent,
                env={**os.environ, **self.env},
            )

    async def start(self, within: float = 30.0) -> None:
        """Start it and wait until it serves /healthz."""
        await asyncio.to_thread(self.spawn)
        assert self.proc is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited {self.proc.returncode}; see {self.log_path}"
                )
            if await self.healthy():
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not serve /healthz within {within} s")

    async def healthy(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port), 1.0
            )
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = await asyncio.wait_for(reader.read(12), 2.0)
            return head.startswith(b"HTTP/1.1 200")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        """User + system CPU seconds of the server process so far."""
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """(user, system) CPU seconds so far: system is mostly the kernel's socket work."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK

    def rss_kb(self) -> int:
        with open(f"/proc/{self.pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_KB

    def stop(self, grace: float = 5.0) -> dict[str, Any]:
        """SIGTERM, then SIGKILL after `grace` s: how long it took, and how it ended."""
        if self.proc is None or self.proc.poll() is not None:
            return {"exit": None if self.proc is None else self.proc.returncode}
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return {"sigterm_exit": f"killed after {grace} s"}
        return {"sigterm_exit": self.proc.returncode, "sigterm_s": round(time.monotonic() - t, 2)}


class Child:
    """A helper process speaking JSON lines, pinned to the load core."""

    def __init__(self, script: str, core: str = LOAD_CORE) -> None:
        self.script = script
        self.core = core
        self.proc: asyncio.subprocess.Process | None = None
        self.cpu0 = 0.0
        self.lock = asyncio.Lock()  # one command at a time: replies come back in order

    async def start(self) -> dict[str, Any]:
        self.proc = await asyncio.create_subprocess_exec(
            *taskset(self.core),
            *nice_zero(),
            sys.executable,
            str(HERE / self.script),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 28,
            cwd=HERE.parent,
        )
        hello = await self.read(30)
        self.cpu0 = hello["cpu"]
        return hello

    async def read(self, within: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not line:
            raise RuntimeError(f"{self.script} exited")
        result: dict[str, Any] = json.loads(line)
        return result

    async def call(self, op: str, reply_within: float = 300.0, **kw: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        async with self.lock:
            self.proc.stdin.write(json.dumps({"op": op, **kw}).encode() + b"\n")
            await self.proc.stdin.drain()
            return await self.read(reply_within)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            await self.call("close", reply_within=10)
            await asyncio.wait_for(self.proc.wait(), 10)
        except (TimeoutError, RuntimeError, OSError):
            self.proc.kill()
            await self.proc.wait()


class Workers:
    """Several loadgen.py processes sharing the subscribers."""

    def __init__(self, count: int, core: str = LOAD_CORE) -> None:
        self.children = [Child("loadgen.py", core) for _ in range(count)]
        self.sizes = [0] * count

    async def start(self) -> None:
        await asyncio.gather(*(c.start() for c in self.children))

    async def connect(
        self, url: str, n: int, batch: int = 2000, concurrency: int = 64, **kw: Any
    ) -> dict[str, Any]:
        """Open n subscribers, spread evenly, in batches of `batch` (a ramp, not a stampede);
        `kw` to loadgen's connect (`sources`, `track`)."""
        ok = failed = 0
        errors: dict[str, int] = {}
        started = time.time()
        done = 0
        while done < n:
            step = min(batch, n - done)
            shares = split(step, len(self.children))
            replies = await asyncio.gather(
                *(
                    c.call("connect", url=url, n=k, concurrency=concurrency, **kw)
                    for c, k in zip(self.children, shares, strict=True)
                )
            )
            for i, r in enumerate(replies):
                ok += r["ok"]
                failed += r["failed"]
                for e, c in r["errors"].items():
                    errors[e] = errors.get(e, 0) + c
                self.sizes[i] += r["ok"]
            done += step
        return {"ok": ok, "failed": failed, "errors": errors, "seconds": time.time() - started}

    async def connect_one(self, index: int, url: str, n: int) -> dict[str, Any]:
        """Open n subscribers on one worker (to interleave with slow clients)."""
        r = await self.children[index % len(self.children)].call("connect", url=url, n=n)
        self.sizes[index % len(self.children)] += r["ok"]
        return r

    async def all(self, op: str, reply_within: float = 300.0, **kw: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(c.call(op, reply_within, **kw) for c in self.children)))

    async def wait(self, per_sub: int, within: float, idle: float) -> list[dict[str, Any]]:
        """Until every subscriber has `per_sub` events since reset, or time runs out."""
        return await self.all("wait", within + 30, per_sub=per_sub, timeout=within, idle=idle)

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.children))


def combined(*groups: Workers) -> Workers:
    """Several groups of load processes seen as one (to meter or wait on them together)."""
    out = Workers(0)
    for g in groups:
        out.children += g.children
        out.sizes += g.sizes
    return out


def split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def latencies_ms(replies: list[dict[str, Any]]) -> list[float]:
    """Every delivery's latency, in ms, from the workers' replies, sorted."""
    out: list[float] = []
    for r in replies:
        a = array("q")
        a.frombytes(base64.b64decode(r.get("lat_us", "")))
        out.extend(v / 1000 for v in a)
    out.sort()
    return out


def source_addresses(n: int, per_address: int = 5000, skip: int = 0) -> list[str]:
    """Loopback source addresses for n client sockets, 127.0.0.2 on (`skip` passes over
    some): each has its own 28,000 ephemeral ports, so TIME_WAITs never run them out."""
    count = max(1, -(-n // per_address))
    return [f"127.0.0.{2 + skip + i}" for i in range(count)]


class RedisServer:
    """A throwaway redis-server on a free port, no persistence, pinned to a core."""

    def __init__(self, core: str = SERVER_CORE) -> None:
        self.port = free_port()
        self.core = core
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def spawn(self) -> Path:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found (apt-get install redis-server)")
        log = HERE / "results" / "redis-server.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    *taskset(self.core),
                    *nice_zero(),
                    exe,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--maxclients",
                    "1000",
                ],
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
            )
        return log

    async def start(self, within: float = 15.0) -> None:
        log = await asyncio.to_thread(self.spawn)
        assert self.proc is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.proc.returncode}; see {log}")
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.write(b"PING\r\n")
            pong = await asyncio.wait_for(reader.readline(), 5)
            writer.close()
            if pong.startswith(b"+PONG"):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"redis-server did not answer PING within {within} s")

    def cpu(self) -> float:
        if self.proc is None:
            return 0.0
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
