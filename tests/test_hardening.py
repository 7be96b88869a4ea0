"""Issue 12's findings: what a client, authenticated or not, must not be able to do."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import jwt
import orjson
import pytest
import websockets
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import (
    Service,
    Start,
    blog,
    close_code,
    eventually,
    notice,
    running,
    within,
)
from wsbroadcast.errors import Refused
from wsbroadcast.events import Position, format_timestamp, parse_batch
from wsbroadcast.metrics import close_label
from wsbroadcast.proxy import Trusted
from wsbroadcast.security import rate_key, verify_subscriber

pytestmark = pytest.mark.anyio

SECRET = "jwt-secret-for-hardening-0123456789abcdef"


@pytest.fixture
async def quick() -> AsyncIterator[Service]:
    """A service whose heartbeats come quickly: every open subscription shows it is open."""
    # Examples come faster than the default rate limit allows.
    async with running(heartbeat_seconds=0.2, connect_rate=10_000) as svc:
        yield svc


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, errors[0].getMessage() + "\n" + (errors[0].exc_text or "")


# --- 4. `since` and `Last-Event-ID`: ASCII digits only; any text a resync or a 4400 --


def test_a_unicode_digit_is_not_a_position() -> None:
    for raw in (
        "e1:\u00b2-0",
        "e1:0-\u2460",
        "e1:\u0663-0",
        "e1:\uff11-1",
    ):  # superscript 2, circled 1, Arabic-Indic 3, full-width 1
        assert Position.parse(raw) is None
    assert Position.parse("e1:12-3") == Position("e1", 12, 3)


# Text anywhere, and text shaped like an id with odd digits in its place.
ODD_DIGITS = st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=3)
NUMBERS = ODD_DIGITS | st.integers(0, 1 << 70).map(str)
ID_LIKE = st.builds(
    lambda e, a, b: f"{e}:{a}-{b}", st.sampled_from(["{epoch}", "x1"]), NUMBERS, NUMBERS
)
TEXT = st.text(max_size=300)
QUERY = st.fixed_dictionaries(
    {},
    optional={"since": ID_LIKE | TEXT, "types": TEXT, "post_id": TEXT, "token": TEXT},
)
# A header's value: no control characters (the HTTP parser refuses those before the app
# sees them), no whitespace at either end (the client library refuses it).
HEADER_TEXT = st.text(st.characters(exclude_categories=["Cc", "Cs"]), max_size=300).map(str.strip)
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


async def epoch_of(svc: Service) -> str:
    return (await svc.head()).rpartition(":")[0]


@PROPERTY
@given(params=QUERY)
@example(params={"since": "{epoch}:\u00b2-0"})
@example(params={"since": "{epoch}:0-\u2460", "types": "blog_update"})
@example(params={"types": "\u00e9" * 70})  # a close reason quoting it: over 123 bytes
async def test_any_ws_query_gets_a_resync_a_4400_or_the_stream(
    quick: Service, caplog: pytest.LogCaptureFixture, params: dict[str, str]
) -> None:
    epoch = await epoch_of(quick)
    params = {k: v.replace("{epoch}", epoch) for k, v in params.items()}
    async with quick.subscribe(**params) as ws:
        with within(5):
            try:
                first = orjson.loads(await ws.recv())
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 4400, closed
            else:  # a resync for an id that is not one, else the stream (a heartbeat)
                assert first["type"] in ("resync", "heartbeat"), first
    no_errors_logged(caplog)


@PROPERTY
@given(last_event_id=ID_LIKE | HEADER_TEXT, params=QUERY)
@example(last_event_id="{epoch}:\u00b2-0", params={})
async def test_any_sse_query_or_last_event_id_gets_a_resync_a_400_or_the_stream(
    quick: Service, caplog: pytest.LogCaptureFixture, last_event_id: str, params: dict[str, str]
) -> None:
    epoch = await epoch_of(quick)
    params = {k: v.replace("{epoch}", epoch) for k, v in params.items()}
    value = last_event_id.replace("{epoch}", epoch)
    # Servers read header bytes as latin-1: send `²` as the one byte that reads as it.
    encoding = "latin-1" if max(value, default="a") <= "\xff" else "utf-8"
    headers = {"Last-Event-ID": value.encode(encoding)}
    with within(5):
        async with quick.http.stream("GET", "/sse", params=params, headers=headers) as response:
            if response.status_code != 200:
                assert response.status_code == 400
                await response.aread()
                assert response.json()["error"] == "invalid_body"
            else:
                async for line in response.aiter_lines():
                    if line.startswith(("data:", ": heartbeat")):
                        assert "heartbeat" in line or '"type":"resync"' in line, line
                        break
    no_errors_logged(caplog)


# --- 6, 7. timestamps out of range, year 1, a JWT `exp` past any float --------------


@pytest.mark.parametrize(
    "stamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"], ids=["before", "after"]
)
async def test_a_timestamp_out_of_range_in_utc_is_a_422_naming_it(
    service: Service, stamp: str
) -> None:
    for path in ("/events", "/events?dry_run=true"):
        response = await service.http.post(path, json={**blog(), "timestamp": stamp})
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "invalid_event"
        assert response.json()["detail"].startswith("timestamp:")


async def test_year_one_goes_out_with_four_digits(service: Service) -> None:
    async with service.subscribe() as ws:
        await service.publish({**notice(), "timestamp": "0001-01-01T00:00:00Z"})
        with within(5):
            while (message := orjson.loads(await ws.recv()))["type"] == "heartbeat":
                pass
    assert message["timestamp"] == "0001-01-01T00:00:00Z"
    assert format_timestamp(datetime(999, 1, 2, tzinfo=UTC)) == "0999-01-02T00:00:00Z"


async def test_a_jwt_exp_past_any_float_is_refused_with_4401_and_401(start: Start) -> None:
    forever = jwt.encode({"sub": "r", "exp": 10**400}, SECRET, algorithm="HS256")
    async with start(jwt_secret=SECRET) as svc:
        async with svc.subscribe(token=forever) as ws:
            assert await close_code(ws) == 4401
        response = await svc.http.get("/sse", params={"token": forever})
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"


# --- 6, 13. 404 and 405 in the contract's form; no trailing-slash redirect ----------


@pytest.mark.parametrize("path", ["/nothing", "/healthz/", "/api/v1/healthz/", "/api/v1/nope"])
async def test_no_route_is_a_json_404_and_never_a_redirect(service: Service, path: str) -> None:
    response = await service.http.get(path, headers={"Host": "evil.example"})
    assert response.status_code == 404, response.headers
    assert "location" not in response.headers
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "not_found" and response.json()["detail"]


@pytest.mark.parametrize("path", ["/events", "/api/v1/events"])
async def test_a_wrong_method_is_a_json_405(service: Service, path: str) -> None:
    response = await service.http.get(path)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {
        "error": "method_not_allowed",
        "detail": f"GET is not allowed on {path}",
    }


# --- 11. close codes a client picks are grouped as `other` --------------------------


def test_close_codes_the_contract_names_are_labels_the_rest_other() -> None:
    for code in (1000, 1001, 1006, 1009, 1013, 4400, 4401, 4403, 4429):
        assert close_label(code) == str(code)
    for code in (1002, 3000, 4000, 4999, 4123):
        assert close_label(code) == "other"


async def test_client_chosen_close_codes_make_no_new_series(service: Service) -> None:
    for code in range(4000, 4030):
        async with service.subscribe() as ws:
            await ws.close(code)

    async def all_counted() -> bool:
        return 'wsb_disconnects_total{code="other"} 30.0' in await service.metrics()

    await eventually(all_counted)
    assert 'code="40' not in await service.metrics()


# --- 12. integers beyond 64 bits and duplicate keys are refused, not changed --------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            b'{"type":"nope","type":"blog_update","data":{"post_id":"p","action":"created"}}',
            "'type' twice",
        ),
        (
            b'{"type":"blog_update","data":{"post_id":"p","action":"created","a":{"b":1,"b" :2}}}',
            "'b' twice",
        ),
        (
            b'{"type":"blog_update","data":{"post_id":"p","action":"created",'
            b'"n":123456789012345678901234567890}}',
            "beyond 64 bits",
        ),
        (
            b'[{"type":"blog_update","data":{"post_id":"p","action":"created",'
            b'"n":-9223372036854775809}}]',
            "beyond 64 bits",
        ),
    ],
    ids=["type-twice", "nested-twice", "big-int", "small-int"],
)
async def test_what_json_would_change_silently_is_refused(
    service: Service, body: bytes, says: str
) -> None:
    headers = {"Content-Type": "application/json"}
    response = await service.http.post("/events", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_json" and says in response.json()["detail"]
    assert (await service.http.get("/events/head")).json()["id"].endswith(":0-0")


def test_what_fits_passes_through_untouched() -> None:
    body = (
        b'{"type":"blog_update","data":{"post_id":"p","action":"created",'
        b'"max":18446744073709551615,"min":-9223372036854775808,"f":1.5e300,'
        b'"s":"12345678901234567890123 \\":", "k\\"":1}}'
    )
    [draft] = parse_batch(body)
    assert draft.data["max"] == (1 << 64) - 1 and draft.data["min"] == -(1 << 63)
    assert draft.data["s"] == '12345678901234567890123 ":' and draft.data['k"'] == 1


# --- 14. rate limits: IPv6 by /64, and the rightmost untrusted X-Forwarded-For ------


def test_ipv6_addresses_count_by_their_64() -> None:
    assert rate_key("2001:db8:1:2::1") == rate_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert rate_key("2001:db8:1:2::1") != rate_key("2001:db8:1:3::1")
    assert rate_key("203.0.113.7") == "203.0.113.7"
    assert rate_key("::ffff:203.0.113.7") == "203.0.113.7"


def test_the_client_is_the_rightmost_address_not_a_trusted_proxy() -> None:
    proxies = Trusted(["10.0.0.0/8", "127.0.0.1"])
    assert proxies.client("6.6.6.6, 203.0.113.7, 10.0.0.2") == "203.0.113.7"
    assert proxies.client("[2001:db8::1]:443, 10.0.0.2:80") == "2001:db8::1"
    assert proxies.client("10.0.0.3, 10.0.0.2") == "10.0.0.3"  # all proxies: the first
    assert Trusted(["*"]).client("6.6.6.6, 203.0.113.7") == "203.0.113.7"


async def attempts_refused(svc: Service, forwarded: list[str]) -> int:
    refused = 0
    for value in forwarded:
        async with svc.subscribe(headers={"X-Forwarded-For": value}) as ws:
            with within(5):
                try:
                    await ws.recv()
                except websockets.ConnectionClosed as closed:
                    refused += closed.rcvd is not None and closed.rcvd.code == 4429
    return refused


async def test_a_forged_x_forwarded_for_entry_picks_no_bucket_of_its_own(start: Start) -> None:
    # nginx's `$proxy_add_x_forwarded_for` appends the address it saw to the client's own.
    forged = [f"198.51.100.{n}, 203.0.113.7" for n in range(6)]
    async with start(connect_rate=0.5, forwarded_allow_ips=("*",), heartbeat_seconds=0.2) as svc:
        assert await attempts_refused(svc, forged) >= 3  # a burst of 1, then 1 every 2 s


async def test_ipv6_clients_of_one_64_share_a_bucket(start: Start) -> None:
    addresses = [f"2001:db8:1:2::{n:x}" for n in range(1, 7)]
    trusted = ("127.0.0.1",)
    async with start(connect_rate=0.5, forwarded_allow_ips=trusted, heartbeat_seconds=0.2) as svc:
        assert await attempts_refused(svc, addresses) >= 3


# A token of any text, or signed with any claims: a 4401, never an exception.
CLAIM_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)


@settings(max_examples=200, deadline=None, database=None)
@given(
    text=st.text(max_size=300),
    claims=st.dictionaries(st.sampled_from(["exp", "nbf", "iat", "sub", "aud"]), CLAIM_VALUES),
)
@example(text="", claims={"exp": 10**400})
def test_any_token_is_refused_with_4401_or_accepted_never_raises(
    text: str, claims: dict[str, object]
) -> None:
    try:
        signed = jwt.encode(claims, SECRET, algorithm="HS256")
    except (TypeError, ValueError, OverflowError):
        signed = text  # claims JSON cannot hold (NaN is fine for PyJWT; sets are not)
    for token in (text, signed):
        try:
            expires = verify_subscriber(token, SECRET, now=0.0)
        except Refused as refused:
            assert refused.code == 4401
        else:
            assert isinstance(expires, float) and expires > 0
