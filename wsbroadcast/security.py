"""Who may publish, who may subscribe, from where, and how often. Pure: no I/O."""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie

import jwt

from .errors import CloseCode, Forbidden, Refused, TooManyRequests, Unauthorized

SUBPROTOCOL = "wsbroadcast"
BEARER_PREFIX = "bearer."  # `Sec-WebSocket-Protocol: wsbroadcast, bearer.<jwt>`
TOKEN_COOKIE = "wsb_token"


def check_publisher(authorization: str | None, token: str | None) -> None:
    """Raise Unauthorized unless `Authorization: Bearer <token>` matches (constant time)."""
    if not token:
        return
    scheme, _, offered = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not offered.strip():
        raise Unauthorized("a publish token is required: Authorization: Bearer <token>")
    if not hmac.compare_digest(offered.strip().encode(), token.encode()):
        raise Unauthorized("the publish token is wrong")


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """Exact (scheme, host, port) match; no Origin is not a browser; `null` only under `*`."""
    if origin is None:
        return True
    allowed = tuple(allowed)
    if "*" in allowed:
        return True
    return origin != "null" and origin.rstrip("/") in allowed


def check_origin(origin: str | None, allowed: Iterable[str]) -> None:
    if not origin_allowed(origin, allowed):
        raise Refused(
            CloseCode.FORBIDDEN,
            "origin not allowed",
            Forbidden(f"origin {origin[:100]!r} is not allowed" if origin else "origin"),
        )


@dataclass(frozen=True, slots=True)
class Credentials:
    """Where a subscriber's token may come from, in the order they are tried."""

    subprotocols: tuple[str, ...] = ()
    cookie_header: str | None = None
    query_token: str | None = None
    authorization: str | None = None

    def token(self) -> str | None:
        for protocol in self.subprotocols:
            if protocol.startswith(BEARER_PREFIX):
                return protocol[len(BEARER_PREFIX) :]
        scheme, _, offered = (self.authorization or "").partition(" ")
        if scheme.lower() == "bearer" and offered.strip():
            return offered.strip()
        if self.cookie_header:
            try:
                morsel = SimpleCookie(self.cookie_header).get(TOKEN_COOKIE)
            except CookieError:
                morsel = None
            if morsel is not None and morsel.value:
                return morsel.value
        return self.query_token or None


def verify_subscriber(
    token: str | None, secret: str | None, now: float | None = None
) -> float | None:
    """The token's expiry (epoch seconds), or None with no secret set; Refused with 4401."""
    if not secret:
        return None
    if not token:
        raise _unauthorized("a subscriber token is required")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],  # only HS256: never `none`, never a public-key algorithm
            options={"require": ["exp"]},
            leeway=0,
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("the subscriber token has expired") from None
    except jwt.PyJWTError as exc:
        raise _unauthorized(f"the subscriber token is invalid: {exc}") from None
    except (TypeError, ValueError, OverflowError):
        # PyJWT before 2.10 checks a claim's type by calling int() on it: a signed
        # `"exp": null` (or a list) raised TypeError there, a 500.
        raise _unauthorized("the subscriber token is invalid: a claim has the wrong type") from None
    try:
        expires = float(claims["exp"])
    except (TypeError, ValueError, OverflowError):  # 10**400 passes PyJWT's check, not float()
        raise _unauthorized("the subscriber token is invalid: exp is out of range") from None
    if expires <= (time.time() if now is None else now):
        raise _unauthorized("the subscriber token has expired")
    return expires


def _unauthorized(reason: str) -> Refused:
    return Refused(CloseCode.UNAUTHORIZED, reason, Unauthorized(reason))


class RateLimiter:
    """A token bucket per address: `rate` attempts a second, bursts of twice that."""

    MAX_TRACKED = 100_000

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = 2 * rate
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def allow(self, address: str, now: float) -> bool:
        address = rate_key(address)
        tokens, at = self._buckets.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if len(self._buckets) >= self.MAX_TRACKED:
            self._forget_full(now)
        if tokens < 1:
            self._buckets[address] = (tokens, now)
            return False
        self._buckets[address] = (tokens - 1, now)
        return True

    def _forget_full(self, now: float) -> None:
        """Drop addresses whose bucket has refilled: they are as good as new."""
        refill = self.burst / self.rate
        self._buckets = {a: v for a, v in self._buckets.items() if now - v[1] < refill}

    def check(self, address: str, now: float) -> None:
        if not self.allow(address, now):
            raise Refused(
                CloseCode.TOO_MANY,
                "too many connection attempts",
                TooManyRequests("too many connection attempts from this address; back off"),
            )


def rate_key(address: str) -> str:
    """Whose bucket an address counts against: an IPv4 address as is, an IPv6 one by its
    /64 (one host commonly holds a whole /64, and could pick a new address per attempt)."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


def header_map(headers: Iterable[tuple[bytes, bytes]]) -> Mapping[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
