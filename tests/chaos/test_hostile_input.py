"""Scenario 9: hostile input. Property-based (hypothesis) bodies and headers for
`POST /events`, and every query parameter of `/ws`, `/sse` and `/readers`: only the
contract's statuses and close codes, never a 500, never a traceback, in a response or the log.

One real server (a subprocess) for all examples. `make test`: 50 examples per property;
`make chaos` (WSB_CHAOS=full): 1,000.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from tests.chaos.harness import FACTOR, Instance, log_errors, scaled
from tests.conftest import Process

TOKEN = "chaos-publish-token"
EXAMPLES = settings(
    max_examples=scaled(50, 1000),
    deadline=None,
    database=None,  # nothing written beside the tests
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PUBLISH_STATUSES = {200, 202, 400, 401, 413, 415, 422, 503}
ERROR_CODES = {
    "invalid_json", "invalid_body", "unauthorized", "too_large",
    "unsupported_media_type", "invalid_event", "unavailable",
}  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[Instance]:
    """One instance for every example: a publish token, connect rate out of the way (a 4429
    is a contract answer, but would hide the rest), and 0.2 s heartbeats, so an accepted
    subscription says so at once."""
    instance = Instance(
        "hostile", "memory://",
        "--publish-token", TOKEN, "--connect-rate", "1000000", "--heartbeat-seconds", "0.2",
        "--history-size", "100",
    )  # fmt: skip
    instance.process = Process(
        [sys.executable, "-m", "wsbroadcast", "--port", str(instance.port),
         "--broker-url", "memory://", *instance.flags]
    )  # fmt: skip
    instance.process.wait_ready(20)
    instance.up = True
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def http(server: Instance) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10 * FACTOR) as client:
        yield client


def no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text


def assert_error_body(response: httpx.Response) -> None:
    """The contract's error body: `{"error": <code>, "detail": <sentence>}`."""
    no_traceback(response.text)
    body = orjson.loads(response.content)
    assert body["error"] in ERROR_CODES, body
    assert isinstance(body["detail"], str) and body["detail"], body


# --- strategies ---------------------------------------------------------------------

printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
# Whatever a client library lets through (h11 refuses control bytes and outer blanks).
header_value = st.binary(max_size=60).map(
    lambda raw: bytes(b for b in raw if 0x20 <= b <= 0xFF and b != 0x7F).strip(b" \t")
)
json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
event_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                "blog_update",
                "comment_update",
                "system_notification",
                "heartbeat",
                "resync",
                "readers",
                "Bad Type",
                "",
            ]
        )
        | st.text(max_size=70),
        "data": st.dictionaries(
            st.sampled_from(["post_id", "comment_id", "action", "message", "level", "x"]),
            json_value,
            max_size=5,
        )
        | json_value,
    },
    optional={"timestamp": st.text(max_size=40) | json_value, "id": json_value},
)


def encode(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return repr(value).encode()  # not JSON at all: another hostile body


bodies = (
    event_like.map(encode)
    | st.lists(event_like, max_size=5).map(encode)
    | json_value.map(encode)
    | st.binary(max_size=300)
    | st.sampled_from(
        [
            b"NaN",
            b'{"type": Infinity}',
            b"[" * 5000,
            b'{"a":1,"a":2}',
            b"\xff\xfe",
            b"",
            b'{"type":"blog_update","data":{"post_id":"p","action":"created"},"n":'
            + b"9" * 40
            + b"}",
        ]
    )
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "application/x+json",
     "multipart/form-data", "", "application/JSON", "*/*"]
) | printable  # fmt: skip
authorizations = st.sampled_from(
    [f"Bearer {TOKEN}", f"bearer {TOKEN}", "Bearer", "", "Basic x"]
) | (printable.map(lambda t: f"Bearer {t}"))
param_names = st.sampled_from(
    ["since", "types", "post_id", "token", "rewind", "readers", "top", "dry_run", "x"]
)
param_values = (
    st.text(max_size=300)
    | st.sampled_from(["", "0", "1", "-1", "101", "true", "abc:1-0", "a,b", ",", "blog_update"])
    | st.integers().map(str)
)
queries = st.dictionaries(param_names, param_values, max_size=4)


# --- properties ---------------------------------------------------------------------


@EXAMPLES
@given(
    body=bodies,
    content_type=content_types,
    authorization=st.none() | authorizations,
    key=st.none() | header_value,
    dry_run=st.none() | param_values,
)
def test_any_publish_gets_a_contract_status_and_error_body_never_a_500(
    http: httpx.Client,
    server: Instance,
    body: bytes,
    content_type: str,
    authorization: str | None,
    key: bytes | None,
    dry_run: str | None,
) -> None:
    headers: dict[str, Any] = {"content-type": content_type.strip()}
    if authorization is not None:
        headers["authorization"] = authorization.strip()
    if key is not None:
        headers["idempotency-key"] = key
    params = {"dry_run": dry_run} if dry_run is not None else {}
    response = http.post("/events", content=body, headers=headers, params=params)
    assert response.status_code in PUBLISH_STATUSES, (response.status_code, response.text)
    if response.status_code >= 400:
        assert_error_body(response)
        if response.status_code == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
        if response.status_code == 503:
            assert response.headers["retry-after"]
    else:
        assert isinstance(orjson.loads(response.content)["ids"], list)
    assert not log_errors(server.log())


@EXAMPLES
@given(query=queries, path=st.sampled_from(["/ws", "/api/v1/ws"]))
def test_any_ws_query_is_accepted_then_served_or_closed_with_4400(
    server: Instance, query: dict[str, str], path: str
) -> None:
    url = f"{server.ws_url}{path}?{httpx.QueryParams(query)}"
    # A refusal is accepted and then closed: never an HTTP error at the handshake.
    with connect(url, open_timeout=10 * FACTOR, close_timeout=5 * FACTOR) as ws:
        try:
            message = orjson.loads(ws.recv(timeout=10 * FACTOR))  # a heartbeat within 0.2 s
        except websockets.ConnectionClosed:
            assert ws.close_code == 4400, (query, ws.close_code, ws.close_reason)
            no_traceback(ws.close_reason or "")
        else:
            assert message["type"] in {"heartbeat", "resync", "blog_update", "comment_update",
                                       "system_notification", "readers"}, message  # fmt: skip
    assert not log_errors(server.log())


@EXAMPLES
@given(
    query=queries,
    last_event_id=st.none() | header_value,
    path=st.sampled_from(["/sse", "/api/v1/sse"]),
)
def test_any_sse_query_gets_a_stream_or_a_contract_refusal(
    http: httpx.Client,
    server: Instance,
    query: dict[str, str],
    last_event_id: bytes | None,
    path: str,
) -> None:
    headers = {"last-event-id": last_event_id} if last_event_id is not None else {}
    with http.stream("GET", path, params=query, headers=headers) as response:
        assert response.status_code in {200, 400, 401, 403, 429, 503}, response.status_code
        if response.status_code == 200:
            assert response.headers["content-type"].startswith("text/event-stream")
            first = next(response.iter_raw())
            assert first.startswith(b"retry:") or first.startswith(b"id:"), first
        else:
            response.read()
            assert_error_body(response)
    assert not log_errors(server.log())


@EXAMPLES
@given(query=queries, path=st.sampled_from(["/readers", "/api/v1/readers"]))
def test_any_readers_query_is_answered_without_a_500(
    http: httpx.Client, server: Instance, query: dict[str, str], path: str
) -> None:
    response = http.get(path, params=query)
    assert response.status_code < 500, (response.status_code, response.text)
    no_traceback(response.text)
    assert not log_errors(server.log())


def test_the_hostile_inputs_left_the_server_serving(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
