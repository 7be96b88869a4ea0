"""`X-Forwarded-For` from trusted proxies: which address a connection is counted as.

uvicorn's own middleware takes the leftmost entry when every proxy is trusted (`*`), and
the leftmost is whatever the client wrote: behind nginx's `$proxy_add_x_forwarded_for`
a client would pick its own address, and its own rate-limit bucket. Here the client is
the rightmost entry that is not a trusted proxy: each proxy appends the address it saw,
so that entry was written by a proxy we trust. With `*`, the peer is trusted and the
entries are not, so the rightmost entry counts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

MAX_HOST = 64  # characters kept of an entry that is not an address


def split_host_port(entry: str) -> str:
    """The host of `1.2.3.4`, `1.2.3.4:80`, `::1` or `[::1]:80`."""
    entry = entry.strip()
    if entry.startswith("["):
        return entry[1 : entry.find("]")] if "]" in entry else entry
    if entry.count(":") == 1:
        return entry.partition(":")[0]
    return entry


class Trusted:
    """The proxies listed in `WSB_FORWARDED_ALLOW_IPS`: addresses, networks, or `*`."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = [e.strip() for e in entries if e.strip()]
        self.everyone = "*" in entries
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.literals: set[str] = set()  # a unix socket path, say
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.literals.add(entry)

    def __contains__(self, host: str) -> bool:
        if self.everyone:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.literals
        return any(address in network for network in self.networks)

    def client(self, forwarded_for: str) -> str | None:
        """The address to count: the rightmost entry that is not a trusted proxy."""
        hosts = [split_host_port(e) for e in forwarded_for.split(",")]
        hosts = [h for h in hosts if h]
        if not hosts:
            return None
        if self.everyone:
            return hosts[-1][:MAX_HOST]
        for host in reversed(hosts):
            if host not in self:
                return host[:MAX_HOST]
        return hosts[0][:MAX_HOST]  # all trusted: the first proxy was the client


class ForwardedFor:
    """ASGI middleware: a trusted peer's `X-Forwarded-For` and `-Proto` into the scope."""

    def __init__(self, app: ASGIApp, trusted: Iterable[str] = ("127.0.0.1",)) -> None:
        self.app = app
        self.trusted = Trusted(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            peer = scope.get("client")
            if peer and peer[0] in self.trusted:
                self._rewrite(scope)
        await self.app(scope, receive, send)

    def _rewrite(self, scope: Scope) -> None:
        forwarded: list[bytes] = []
        proto: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded.append(value)
            elif name == b"x-forwarded-proto":
                proto = value
        if forwarded:
            host = self.trusted.client(b",".join(forwarded).decode("latin-1"))
            if host:
                scope["client"] = (host, 0)
        if proto is not None:
            scheme = proto.decode("latin-1").strip().lower()
            if scheme in ("http", "https"):
                scope["scheme"] = (
                    scheme.replace("http", "ws") if scope["type"] == "websocket" else scheme
                )
