"""Memory bounded by bytes, not only by count; idempotent repeats before the body."""

from __future__ import annotations

import pytest

from tests.conftest import Service, Start, blog, receive
from wsbroadcast.brokers.memory import MemoryBroker
from wsbroadcast.errors import Unavailable
from wsbroadcast.events import Draft, Position

pytestmark = pytest.mark.anyio


def big(post_id: str, size: int) -> Draft:
    return Draft("blog_update", {"post_id": post_id, "action": "created", "text": "x" * size}, "t")


async def test_a_repeated_key_answers_the_first_202_whatever_its_body(service: Service) -> None:
    headers = {"Idempotency-Key": "k1"}
    first = await service.http.post("/events", json=blog(), headers=headers)
    assert first.status_code == 202
    again = await service.http.post("/events", json={"type": "nope"}, headers=headers)
    assert (again.status_code, again.json()) == (202, first.json())
    # A refused request still does not use up a key.
    refused = await service.http.post(
        "/events", json={"type": "nope"}, headers={"Idempotency-Key": "k2"}
    )
    assert refused.status_code == 422
    assert (
        await service.http.post("/events", json=blog(), headers={"Idempotency-Key": "k2"})
    ).status_code == 202


async def test_a_post_id_longer_than_a_filter_can_be_is_refused(service: Service) -> None:
    response = await service.http.post("/events", json=blog("p" * 257))
    assert response.status_code == 422
    assert response.json()["detail"] == "data.post_id: must be at most 256 characters"
    assert (await service.http.post("/events", json=blog("p" * 256))).status_code == 202


async def test_history_is_bounded_by_bytes_and_what_aged_out_resyncs(start: Start) -> None:
    async with start(history_bytes=1 << 20) as svc:
        ids = [
            (await svc.publish({**blog(f"p{i}"), "data": {**blog()["data"], "x": "y" * 60_000}}))[0]
            for i in range(40)
        ]
        async with svc.subscribe(since=ids[0]) as ws:
            assert (await receive(ws))["type"] == "resync"  # 2.4 MB posted, 1 MiB kept
        async with svc.subscribe(since=ids[-3]) as ws:
            assert [(await receive(ws))["id"] for _ in range(2)] == ids[-2:]


async def test_the_history_holds_no_more_than_its_byte_budget() -> None:
    broker = MemoryBroker(history_size=1000, history_bytes=1 << 20)
    for i in range(100):
        await broker.append([big(f"p{i}", 50_000)])
    assert broker._held <= 1 << 20
    assert 5 <= len(broker._history) <= 10
    await broker.aclose()


async def test_the_backlog_the_hub_has_not_taken_is_bounded_by_bytes() -> None:
    broker = MemoryBroker(history_size=1000, backlog_bytes=1 << 20)
    accepted = []
    with pytest.raises(Unavailable):
        for i in range(100):
            accepted += (await broker.append([big(f"p{i}", 50_000)])).ids
    assert 5 <= len(accepted) <= 10
    # The refused batch took no id: the head is the last accepted.
    assert await broker.head() == accepted[-1]
    batch = await anext(broker.tail())  # the hub takes one: room again
    assert isinstance(batch, list)
    assert (await broker.append([big("again", 50_000)])).ids
    await broker.aclose()


async def test_the_hub_takes_a_backlog_of_posts_for_many_posts_at_once() -> None:
    """A POST for 100 posts holds one event for each post's subscribers: the hub takes
    the backlog whole, so a run gives a subscriber its event from each POST in one write
    (the hub bounds each share; at 1,000 events a run ended after ten such POSTs)."""
    broker = MemoryBroker(history_size=5000)
    for _ in range(12):
        await broker.append([big(f"p{k}", 10) for k in range(100)])
    batch = await anext(broker.tail())
    assert isinstance(batch, list)
    assert len(batch) == 1200
    await broker.aclose()


async def test_an_idempotency_keys_answer_is_kept_compactly() -> None:
    broker = MemoryBroker(history_size=1000)
    ids = (await broker.append([big(f"p{i}", 10) for i in range(500)], key="batch")).ids
    assert await broker.seen("batch") == ids
    assert all(Position.parse(i) for i in ids)
    assert broker._key_bytes < 5_000  # as a list of 500 strings: about 42 KB
    repeated = await broker.append([big("other", 10)], key="batch")
    assert (repeated.ids, repeated.repeated) == (ids, True)
    await broker.aclose()


def test_a_refusals_close_reason_fits_a_close_frame() -> None:
    from wsbroadcast.errors import CloseCode, Refused, Unauthorized

    reason = "the subscriber token is invalid: " + "é" * 200
    refusal = Refused(CloseCode.UNAUTHORIZED, reason, Unauthorized(reason))
    assert len(refusal.close_reason.encode()) <= 123
    assert reason.startswith(refusal.close_reason)
