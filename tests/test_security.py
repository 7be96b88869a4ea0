"""Who may publish, who may subscribe, from where and how often; nothing secret in logs."""

from __future__ import annotations

import base64
import time
from contextlib import AsyncExitStack

import anyio
import httpx
import jwt
import orjson
import pytest
import websockets

from tests.conftest import (
    Service,
    Start,
    blog,
    close_code,
    free_port,
    notice,
    receive,
    spawned,
)
from wsbroadcast.security import Credentials, RateLimiter, origin_allowed

pytestmark = pytest.mark.anyio

SECRET = "jwt-secret-for-tests-0123456789abcdef"


def token(secret: str = SECRET, **claims: object) -> str:
    return jwt.encode(
        {"sub": "reader", "exp": int(time.time()) + 300, **claims}, secret, algorithm="HS256"
    )


def unsigned(header: dict[str, str], claims: dict[str, object]) -> str:
    part = lambda d: base64.urlsafe_b64encode(orjson.dumps(d)).rstrip(b"=").decode()  # noqa: E731
    return f"{part(header)}.{part(claims)}.c2lnbmF0dXJl"


# --- publisher auth -----------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", "Basic cHViOnRva2Vu", "Bearer", "pub-token"],
    ids=["none", "wrong", "basic", "empty", "no-scheme"],
)
async def test_publishing_needs_the_bearer_token_when_one_is_set(
    start: Start, authorization: str | None
) -> None:
    async with start(publish_token="pub-token") as svc:
        headers = {"Authorization": authorization} if authorization else {}
        response = await svc.http.post("/events", json=blog(), headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthorized"
        ok = await svc.http.post(
            "/events", json=blog(), headers={"Authorization": "Bearer pub-token"}
        )
        assert ok.status_code == 202


async def test_auth_is_checked_before_the_body(start: Start) -> None:
    async with start(publish_token="pub-token") as svc:
        response = await svc.http.post(
            "/events", content=b"not json at all", headers={"content-type": "text/plain"}
        )
        assert response.status_code == 401


# --- subscriber auth ----------------------------------------------------------------


async def test_a_token_is_accepted_in_the_subprotocol_cookie_or_query(start: Start) -> None:
    async with start(jwt_secret=SECRET) as svc:
        good = token()
        ways = [
            svc.subscribe(subprotocols=["wsbroadcast", f"bearer.{good}"]),
            svc.subscribe(headers={"Cookie": f"theme=dark; wsb_token={good}"}),
            svc.subscribe(token=good),
        ]
        async with AsyncExitStack() as stack:
            sockets = [await stack.enter_async_context(way) for way in ways]
            assert sockets[0].subprotocol == "wsbroadcast"
            [event_id] = await svc.publish(notice())
            for ws in sockets:
                assert (await receive(ws))["id"] == event_id


@pytest.mark.parametrize(
    "bad",
    [
        None,
        token(secret="another-secret-0123456789abcdefghij"),
        token(exp=int(time.time()) - 10),
        unsigned({"alg": "none", "typ": "JWT"}, {"exp": int(time.time()) + 300}),
        unsigned({"alg": "RS256", "typ": "JWT"}, {"exp": int(time.time()) + 300}),
        unsigned({"alg": "HS256", "typ": "JWT"}, {"exp": "tomorrow"}),
        jwt.encode({"sub": "no-exp"}, SECRET, algorithm="HS256"),
        "not.a.jwt",
    ],
    ids=[
        "none",
        "wrong-signature",
        "expired",
        "alg-none",
        "rs256",
        "exp-string",
        "no-exp",
        "garbage",
    ],
)
async def test_a_missing_or_bad_token_closes_with_4401_after_accept(
    start: Start, bad: str | None
) -> None:
    async with start(jwt_secret=SECRET) as svc:
        params = {"token": bad} if bad else {}
        async with svc.subscribe(subprotocols=["wsbroadcast"], **params) as ws:
            assert ws.subprotocol == "wsbroadcast"  # accepted first, so the code is readable
            assert await close_code(ws) == 4401


async def test_an_open_connection_is_closed_with_4401_when_its_token_expires(
    start: Start,
) -> None:
    async with start(jwt_secret=SECRET) as svc:
        short = jwt.encode({"exp": time.time() + 1.5}, SECRET, algorithm="HS256")
        async with svc.subscribe(token=short) as ws:
            [event_id] = await svc.publish(notice())
            assert (await receive(ws))["id"] == event_id
            assert await close_code(ws, seconds=5) == 4401


# --- origin -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:3000", True),
        ("http://127.0.0.1:3000", True),
        ("https://evil.example", False),
        ("http://localhost:3000.evil.com", False),
        ("http://localhost:3001", False),
        ("https://localhost:3000", False),
        ("null", False),
        (None, True),
    ],
    ids=[
        "allowed",
        "allowed-ip",
        "other",
        "suffix-trick",
        "other-port",
        "other-scheme",
        "null",
        "none",
    ],
)
async def test_origins_compare_exactly(service: Service, origin: str | None, allowed: bool) -> None:
    headers = {"Origin": origin} if origin else {}
    async with service.subscribe(headers=headers) as ws:
        if allowed:
            [event_id] = await service.publish(notice())
            assert (await receive(ws))["id"] == event_id
        else:
            assert await close_code(ws) == 4403


async def test_star_allows_any_origin_even_null(start: Start) -> None:
    async with start(allowed_origins=("*",)) as svc:
        for origin in ("https://anything.example", "null"):
            async with svc.subscribe(headers={"Origin": origin}) as ws:
                [event_id] = await svc.publish(notice())
                assert (await receive(ws))["id"] == event_id


def test_origin_rules_are_pure() -> None:
    assert origin_allowed("https://a.example/", ["https://a.example"])
    assert not origin_allowed("null", ["null"])
    assert origin_allowed("null", ["*"])


# --- limits -------------------------------------------------------------------------


async def test_past_the_connection_limit_subscribers_get_1013(start: Start) -> None:
    async with start(max_connections=2) as svc:
        async with svc.subscribe() as a, svc.subscribe() as b:
            async with svc.subscribe() as third:
                assert await close_code(third) == 1013
            sse = await svc.http.get("/sse")
            assert sse.status_code == 503  # both transports count toward the limit
            for ws in (a, b):
                assert ws.state.name == "OPEN"
        async with svc.subscribe() as again:  # places free up when subscribers leave
            [event_id] = await svc.publish(notice())
            assert (await receive(again))["id"] == event_id


async def test_too_many_attempts_from_one_address_get_4429(start: Start) -> None:
    async with start(connect_rate=2.0) as svc:  # a burst of 4, then 2 a second
        codes = []
        for _ in range(5):
            async with svc.subscribe() as ws:
                codes.append(await close_code(ws) if len(codes) == 4 else None)
                await ws.close()
        assert codes[-1] == 4429
        assert 'wsb_disconnects_total{code="4429"} 1.0' in await svc.metrics()


def test_the_rate_limit_bucket_refills() -> None:
    limiter = RateLimiter(rate=2.0)
    assert all(limiter.allow("a", now=0.0) for _ in range(4))
    assert not limiter.allow("a", now=0.0)
    assert limiter.allow("b", now=0.0)  # per address
    assert limiter.allow("a", now=0.5)  # one more after half a second
    assert not limiter.allow("a", now=0.5)
    assert all(limiter.allow("a", now=10.0) for _ in range(4))  # full again after a rest


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted-proxy", "untrusted-peer"])
async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(
    start: Start, trusted: bool
) -> None:
    trust = ("127.0.0.1",) if trusted else ("10.9.9.9",)
    async with start(connect_rate=1.0, forwarded_allow_ips=trust) as svc:
        for _ in range(2):  # the burst of 2 for one client behind the proxy
            async with svc.subscribe(headers={"X-Forwarded-For": "203.0.113.7"}) as ws:
                await ws.close()
        async with svc.subscribe(headers={"X-Forwarded-For": "203.0.113.8"}) as other:
            if trusted:  # another client behind the same proxy has its own bucket
                [event_id] = await svc.publish(notice())
                assert (await receive(other))["id"] == event_id
            else:  # every attempt counted against the proxy's own address
                assert await close_code(other) == 4429


# --- subscribing off ----------------------------------------------------------------


async def test_with_subscribing_off_handshakes_get_1013_and_publishing_goes_on(
    start: Start,
) -> None:
    async with start(websocket_enabled=False) as svc:
        async with svc.subscribe() as ws:
            assert await close_code(ws) == 1013
        assert (await svc.http.get("/sse")).status_code == 503
        [event_id] = await svc.publish(blog())
        assert await svc.head() == event_id  # history goes on


def test_credentials_prefer_the_subprotocol() -> None:
    both = Credentials(
        subprotocols=("wsbroadcast", "bearer.A"), cookie_header="wsb_token=B", query_token="C"
    )
    assert both.token() == "A"
    assert Credentials(cookie_header="x=1; wsb_token=B", query_token="C").token() == "B"
    assert Credentials(query_token="C").token() == "C"
    assert Credentials(authorization="Bearer D").token() == "D"


# --- logs ---------------------------------------------------------------------------


async def test_no_token_or_secret_ever_appears_in_the_logs() -> None:
    port = free_port()
    publish_token = "pub-token-7c1e2b9a"
    reader = token()
    env = {"WSB_PUBLISH_TOKEN": publish_token, "WSB_JWT_SECRET": SECRET}
    with spawned("--port", str(port), "--log-level", "trace", env=env) as process:
        process.wait_ready()
        url = f"ws://127.0.0.1:{port}/ws"
        for connect in (
            websockets.connect(f"{url}?token={reader}"),
            websockets.connect(url, subprotocols=["wsbroadcast", f"bearer.{reader}"]),  # type: ignore[list-item]
            websockets.connect(url, additional_headers={"Cookie": f"wsb_token={reader}"}),
            websockets.connect(f"{url}?token=wrong-{reader}"),
        ):
            async with connect as ws:
                await ws.close()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await http.post(
                "/events", json=blog(), headers={"Authorization": f"Bearer {publish_token}"}
            )
            await http.post("/events", json=blog(), headers={"Authorization": "Bearer wrong-1"})
            async with http.stream("GET", f"/sse?token={reader}") as stream:
                assert stream.status_code == 200
        assert await anyio.to_thread.run_sync(process.terminate) == 0
    output = process.output
    assert "WebSocket /ws" in output  # the handshakes were logged...
    for secret in (publish_token, reader, SECRET, "wrong-1", reader.split(".")[1]):
        assert secret not in output  # ...without what they carried
