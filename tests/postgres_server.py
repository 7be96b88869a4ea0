"""Real PostgreSQL for the tests: the tests' own clusters (initdb + pg_ctl) on free ports,
never the machine's server, so a test may stop one and start it again, and a fresh database
in one for each test that does not.

`initdb` and `postgres` refuse to run as root, as CI runs: then as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.conftest import FACTOR


def binary(name: str) -> str:
    """A PostgreSQL program: on PATH, else under Debian's /usr/lib/postgresql/*/bin."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    assert found, f"{name} not found: install PostgreSQL (make test does, from Debian's packages)"
    return found


def _as_owner() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of `server_url`; dropped after, whoever is connected."""
    name = "wsb_test_" + secrets.token_hex(6)
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield server_url.rpartition("/")[0] + "/" + name
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


class Cluster:
    """A test's own PostgreSQL cluster in a new folder, on `port`: fsync off, local only.

    The folder is under /tmp, not pytest's tmp_path: the `postgres` user must reach it.
    """

    def __init__(self, port: int) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="wsb-pg-"))
        self.port = port
        self.data = self.folder / "data"
        self.socket_dir = self.folder / "sockets"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*_as_owner(), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60 * FACTOR,
        )

    def init(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            shutil.chown(self.socket_dir, "postgres")
        self._run(
            binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "--no-sync", "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip

    def start(self) -> None:
        """Start (again) on the same port; returns once it accepts connections."""
        options = f"-p {self.port} -k {self.socket_dir} -c fsync=off -c listen_addresses=127.0.0.1"
        self._run(
            binary("pg_ctl"), "start", "-D", str(self.data), "-w", "-t", str(int(60 * FACTOR)),
            "-l", str(self.folder / "log"), "-o", options,
        )  # fmt: skip

    def stop(self) -> None:
        """A fast shutdown: every session is ended, as in an outage."""
        self._run(binary("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w")

    def remove(self) -> None:
        """Stop it if it runs, and delete its folder."""
        if (self.data / "postmaster.pid").exists():
            self._run(binary("pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate", "-w")
        shutil.rmtree(self.folder, ignore_errors=True)
