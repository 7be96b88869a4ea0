"""POST /events over real sockets: every row of the contract's error table, batches,
idempotency, dry runs, hostile bodies, and both route prefixes."""

from __future__ import annotations

import asyncio
import re
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx
import pytest

from tests.conftest import Service, Start, blog, comment, notice, receive, receive_n

pytestmark = pytest.mark.anyio

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")


@pytest.mark.parametrize("prefix", ["", "/api/v1"], ids=["short", "api-v1"])
@pytest.mark.parametrize("event", [blog(), comment(), notice()], ids=["blog", "comment", "notice"])
async def test_each_event_type_reaches_every_subscriber_at_both_paths(
    service: Service, prefix: str, event: dict[str, Any]
) -> None:
    async with service.subscribe(f"{prefix}/ws") as a, service.subscribe(f"{prefix}/ws") as b:
        response = await service.http.post(f"{prefix}/events", json=event)
        assert response.status_code == 202
        [event_id] = response.json()["ids"]
        for ws in (a, b):
            message = await receive(ws)
            assert set(message) == {"id", "type", "data", "timestamp"}
            assert message["id"] == event_id
            assert message["type"] == event["type"]
            assert message["data"] == event["data"]
            assert TIMESTAMP.match(message["timestamp"])


async def test_a_batch_is_delivered_in_order_with_ids_in_the_batch_order(service: Service) -> None:
    batch = [blog(f"p{i}") for i in range(20)]
    async with service.subscribe() as ws:
        ids = await service.publish(batch)
        messages = await receive_n(ws, 20)
    assert [m["id"] for m in messages] == ids
    assert [m["data"]["post_id"] for m in messages] == [f"p{i}" for i in range(20)]
    assert len(set(ids)) == 20


async def test_many_subscribers_get_every_event_in_one_order(service: Service) -> None:
    async with AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(service.subscribe()) for _ in range(20)]
        ids = []
        for i in range(10):
            ids += await service.publish([notice(f"m{i}"), blog(f"p{i}")])
        for ws in sockets:
            assert [m["id"] for m in await receive_n(ws, 20)] == ids


async def test_extra_data_fields_pass_through_untouched(service: Service) -> None:
    event = blog(title="Hello, wörld", tags=["a", "b"], nested={"n": 1.5, "ok": True})
    async with service.subscribe() as ws:
        await service.publish(event)
        assert (await receive(ws))["data"] == event["data"]


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
        ("2024-01-01T00:00:00", "2024-01-01T00:00:00Z"),
        ("2024-01-01T02:00:00.5+02:00", "2024-01-01T00:00:00.500000Z"),
        ("2024-06-30T23:59:59.123456-01:00", "2024-07-01T00:59:59.123456Z"),
    ],
    ids=["utc", "no-offset", "offset-fraction", "negative-offset"],
)
async def test_timestamps_go_out_in_utc_with_fractions_kept(
    service: Service, given: str, sent: str
) -> None:
    async with service.subscribe() as ws:
        await service.publish({**notice(), "timestamp": given})
        assert (await receive(ws))["timestamp"] == sent


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"error", "detail"}
    return response.status_code, body["error"], body["detail"]


@pytest.mark.parametrize(
    ("body", "status", "code", "detail"),
    [
        (b"{", 400, "invalid_json", "not valid JSON"),
        (b"NaN", 400, "invalid_json", "not valid JSON"),
        (b'{"type": "blog_update", "data": {"n": Infinity}}', 400, "invalid_json", "JSON"),
        (b"[" * 30_000 + b"]" * 30_000, 400, "invalid_json", "depth limit"),
        (b"[" * 100_000 + b"]" * 100_000, 413, "too_large", "over the limit"),
        (
            b'{"type":"system_notification","data":{"message":"x","level":"info","n":1'
            + b"0" * 5000
            + b"}}",
            400,
            "invalid_json",
            "JSON",
        ),
        (b'{"type": "blog_update", "data": {"post_id": "\xff"}}', 400, "invalid_json", "UTF-8"),
        (b'{"type": "blog_update", "data": {"post_id": "\\ud800"}}', 400, "invalid_json", "JSON"),
        (b'"a string"', 400, "invalid_body", "event object or an array"),
        (b"[]", 400, "invalid_body", "empty array"),
        (b"[1]", 400, "invalid_body", "events[0]: must be an object"),
        (b'{"type": "nope", "data": {}}', 422, "invalid_event", "type: unknown type 'nope'"),
        (
            b'{"type": "heartbeat", "data": {}}',
            422,
            "invalid_event",
            "type: 'heartbeat' is reserved",
        ),
        (b'{"type": "resync", "data": {}}', 422, "invalid_event", "type: 'resync' is reserved"),
        (b'{"data": {}}', 422, "invalid_event", "type: is required"),
        (b'{"type": "blog_update"}', 422, "invalid_event", "data: must be an object"),
        (
            b'{"type": "blog_update", "data": {"post_id": "", "action": "created"}}',
            422,
            "invalid_event",
            "data.post_id: must be a non-empty string",
        ),
        (
            b'{"type": "blog_update", "data": {"post_id": "p", "action": "moved"}}',
            422,
            "invalid_event",
            "data.action: must be one of created, updated, deleted",
        ),
        (
            b'{"type": "comment_update", "data": {"post_id": "p", "action": "created"}}',
            422,
            "invalid_event",
            "data.comment_id: must be a non-empty string",
        ),
        (
            b'{"type": "system_notification", "data": {"message": "m", "level": "debug"}}',
            422,
            "invalid_event",
            "data.level: must be one of info, warning, error",
        ),
        (
            b'{"type": "system_notification", "data": {"message": "m", "level": "info"},'
            b' "id": "x"}',
            422,
            "invalid_event",
            "id: unknown field",
        ),
        (
            b'{"type": "system_notification", "data": {"message": "m", "level": "info"},'
            b' "timestamp": "yesterday"}',
            422,
            "invalid_event",
            "timestamp: 'yesterday' is not",
        ),
    ],
    ids=[
        "not-json",
        "nan",
        "infinity",
        "30k-deep",
        "100k-deep",
        "5000-digits",
        "invalid-utf8",
        "lone-surrogate",
        "string",
        "empty-array",
        "array-of-number",
        "unknown-type",
        "heartbeat-reserved",
        "resync-reserved",
        "no-type",
        "no-data",
        "empty-post-id",
        "bad-action",
        "no-comment-id",
        "bad-level",
        "top-level-id",
        "bad-timestamp",
    ],
)
async def test_bad_bodies_are_refused_with_the_contracts_code_and_publish_nothing(
    service: Service, body: bytes, status: int, code: str, detail: str
) -> None:
    before = await service.head()
    response = await service.http.post(
        "/events", content=body, headers={"content-type": "application/json"}
    )
    got_status, got_code, got_detail = error_of(response)
    assert (got_status, got_code) == (status, code)
    assert detail in got_detail
    assert await service.head() == before
    assert (await service.http.get("/healthz")).status_code == 200


async def test_a_batch_with_one_bad_event_is_refused_whole_naming_its_index(
    service: Service,
) -> None:
    before = await service.head()
    batch = [blog("a"), blog("b"), notice(), blog("d"), {"type": "blog_update", "data": {}}]
    response = await service.http.post("/events", json=batch)
    assert error_of(response) == (
        422,
        "invalid_event",
        "events[4].data.post_id: must be a non-empty string",
    )
    assert await service.head() == before


async def test_a_batch_over_500_is_too_large(service: Service) -> None:
    response = await service.http.post("/events", json=[notice()] * 501)
    assert error_of(response)[:2] == (413, "too_large")
    assert len(await service.publish([notice()] * 500)) == 500


async def test_a_body_over_the_limit_is_refused_as_it_arrives(start: Start) -> None:
    async with start(max_body_bytes=1024) as svc:
        response = await svc.http.post("/events", json=notice("x" * 2000))
        assert error_of(response)[:2] == (413, "too_large")
        assert (await svc.http.get("/healthz")).status_code == 200


async def test_a_10_mb_body_is_refused_without_being_read_whole(service: Service) -> None:
    # curl reports what the server answered even if it stops reading early.
    result = await anyio.run_process(
        ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--json", "@-", f"{service.url}/events"],
        input=b"[" + b'"x",' * 2_500_000 + b'"x"]',
        check=False,
    )
    assert result.stdout.decode().rsplit("\n", 1)[1] == "413"
    assert (await service.http.get("/healthz")).status_code == 200


async def test_a_chunked_body_with_no_length_is_cut_off_at_the_limit(service: Service) -> None:
    sent = 0

    async def chunks() -> Any:
        nonlocal sent
        for _ in range(10_000):  # 10 MB, if it were all read
            sent += 1
            yield b" " * 1024

    try:
        response = await service.http.post(
            "/events", content=chunks(), headers={"content-type": "application/json"}
        )
    except httpx.HTTPError:
        pass  # the server may close before this client finishes writing
    else:
        assert error_of(response)[:2] == (413, "too_large")
    assert sent < 10_000
    assert (await service.http.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "", "application/jsonx"],
)
async def test_a_body_that_is_not_json_by_content_type_is_415_and_shows_curl_json(
    service: Service, content_type: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await service.http.post("/events", content=b"{}", headers=headers)
    status, code, detail = error_of(response)
    assert (status, code) == (415, "unsupported_media_type")
    assert "curl --json" in detail


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/cloudevents+json"]
)
async def test_json_content_types_with_parameters_or_suffix_are_accepted(
    service: Service, content_type: str
) -> None:
    response = await service.http.post(
        "/events",
        content=b'{"type":"blog_update","data":{"post_id":"p","action":"created"}}',
        headers={"content-type": content_type},
    )
    assert response.status_code == 202


async def test_curl_json_publishes(service: Service) -> None:
    result = await anyio.run_process(
        [
            "curl",
            "-sS",
            "--json",
            '{"type":"blog_update","data":{"post_id":"p1","action":"created"}}',
            f"{service.url}/events",
        ],
    )
    assert result.stdout.startswith(b'{"ids":["')


async def test_a_repeated_idempotency_key_publishes_nothing_and_answers_the_same_ids(
    service: Service,
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    async with service.subscribe() as ws:
        first = await service.publish([blog("a"), blog("b")], headers=headers)
        again = await service.publish(notice("different body"), headers=headers)
        marker = await service.publish(notice("marker"))
        messages = await receive_n(ws, 3)
    assert again == first
    assert [m["id"] for m in messages] == [*first, *marker]


async def test_a_refused_request_does_not_use_up_its_key(service: Service) -> None:
    headers = {"Idempotency-Key": "k1"}
    response = await service.http.post("/events", json={"type": "nope"}, headers=headers)
    assert response.status_code == 422
    ids = await service.publish(blog(), headers=headers)
    assert await service.head() == ids[0]


async def test_two_requests_with_one_key_at_once_publish_once(service: Service) -> None:
    headers = {"Idempotency-Key": "race"}
    results = await asyncio.gather(
        *(service.publish(blog(f"p{i}"), headers=headers) for i in range(10))
    )
    assert all(ids == results[0] for ids in results)
    assert await service.head() == results[0][0]


async def test_dry_run_validates_and_publishes_nothing(service: Service) -> None:
    before = await service.head()
    ok = await service.http.post("/events?dry_run=true", json=[blog(), notice()])
    assert (ok.status_code, ok.json()) == (200, {"ids": []})
    bad = await service.http.post("/events?dry_run=true", json={"type": "blog_update", "data": {}})
    assert error_of(bad)[:2] == (422, "invalid_event")
    assert await service.head() == before


async def test_unknown_types_pass_when_strict_typing_is_off(start: Start) -> None:
    async with start(strict_types=False) as svc, svc.subscribe() as ws:
        await svc.publish({"type": "order.shipped-v2", "data": {"order": 7}})
        message = await receive(ws)
        assert (message["type"], message["data"]) == ("order.shipped-v2", {"order": 7})
        for bad in ("Order", "9lives", "x" * 65, "heartbeat"):
            response = await svc.http.post("/events", json={"type": bad, "data": {}})
            assert error_of(response)[:2] == (422, "invalid_event"), bad
        response = await svc.http.post("/events", json={"type": "a.b", "data": []})
        assert error_of(response) == (422, "invalid_event", "data: must be an object")


async def test_ids_are_unique_and_head_is_the_newest(service: Service) -> None:
    ids = []
    for _ in range(5):
        ids += await service.publish([notice()] * 3)
    assert len(set(ids)) == 15
    assert await service.head() == ids[-1]
