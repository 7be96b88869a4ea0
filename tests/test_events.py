"""Pure tests, no server: ids (`Position.parse`), which of two positions is newer, and
validating a `POST /events` body (`events.parse_batch`) with the contract's error details.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import blog, comment, notice
from wsbroadcast import events
from wsbroadcast.errors import ServiceError
from wsbroadcast.events import Draft, Event, Position
from wsbroadcast.subscription import _later, _newer

NOW = "2024-05-01T12:00:00Z"
POST = {"post_id": "p1", "action": "created"}  # a blog_update's data


# Ids: `<epoch>:<ms>-<seq>`


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("a1b2c3d4:1714564800000-0", Position("a1b2c3d4", 1714564800000, 0), id="id"),
        pytest.param("e:0-0", Position("e", 0, 0), id="zero"),
        pytest.param("E9:12-345", Position("E9", 12, 345), id="upper-case-epoch"),
        pytest.param("e:007-01", Position("e", 7, 1), id="leading-zeros"),
        pytest.param("e:" + "9" * 19 + "-0", Position("e", 10**19 - 1, 0), id="ms-19-digits"),
        pytest.param("e:0-" + "9" * 19, Position("e", 0, 10**19 - 1), id="seq-19-digits"),
    ],
)
def test_an_id_parses_into_its_epoch_and_place(raw: str, expected: Position) -> None:
    position = Position.parse(raw)
    assert position == expected
    assert position is not None and position.place == (expected.ms, expected.seq)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("1714564800000-0", id="no-epoch"),
        pytest.param(":1-0", id="empty-epoch"),
        pytest.param("e:1", id="no-dash"),
        pytest.param("e:-0", id="empty-ms"),
        pytest.param("e:1-", id="empty-seq"),
        pytest.param("e:1-2-3", id="two-dashes"),
        pytest.param("a:b:1-0", id="colon-in-epoch"),
        pytest.param("e f:1-0", id="space-in-epoch"),
        pytest.param("e-f:1-0", id="dash-in-epoch"),
        pytest.param("é:1-0", id="non-ascii-epoch"),
        pytest.param("e:+1-0", id="signed-ms"),
        pytest.param("e: 1-0", id="space-in-ms"),
        pytest.param("e:1.5-0", id="fraction"),
        pytest.param("e:0x1-0", id="hex"),
        pytest.param("e:" + "1" * 20 + "-0", id="ms-20-digits"),
        pytest.param("e:0-" + "1" * 20, id="seq-20-digits"),
        pytest.param("e:²-0", id="superscript-ms"),
        pytest.param("e:1-²", id="superscript-seq"),
        pytest.param("e:\u0661-0", id="arabic-indic-ms"),
        pytest.param("e:1-\u0663", id="arabic-indic-seq"),
        pytest.param("e:\uff11-0", id="fullwidth-ms"),
    ],
)
def test_what_is_not_an_id_parses_to_none(raw: str) -> None:
    assert Position.parse(raw) is None


def test_an_id_survives_the_round_trip() -> None:
    position = Position("a1b2c3d4", 1714564800000, 7)
    assert str(position) == "a1b2c3d4:1714564800000-7"
    assert Position.parse(str(position)) == position


# Newer than: a stream position's (ms, seq) order within an epoch; a new epoch is news.

A_5_0 = Position("aaaa", 5, 0)
A_5_1 = Position("aaaa", 5, 1)
A_6_0 = Position("aaaa", 6, 0)
B_1_0 = Position("bbbb", 1, 0)


def live(position: Position) -> Event:
    return events.make_event(Draft("blog_update", POST, NOW), position)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param(None, None, None, id="neither"),
        pytest.param(A_5_0, None, A_5_0, id="only-first"),
        pytest.param(None, A_5_0, A_5_0, id="only-second"),
        pytest.param(A_5_0, A_6_0, A_6_0, id="second-further-by-ms"),
        pytest.param(A_6_0, A_5_0, A_6_0, id="first-further-by-ms"),
        pytest.param(A_5_1, A_5_0, A_5_1, id="first-further-by-seq"),
        pytest.param(A_5_0, A_5_1, A_5_1, id="second-further-by-seq"),
        pytest.param(A_5_0, A_5_0, A_5_0, id="equal"),
        pytest.param(A_6_0, B_1_0, B_1_0, id="new-epoch-wins-though-smaller"),
        pytest.param(B_1_0, A_6_0, A_6_0, id="epoch-announced-last-wins"),
    ],
)
def test_later_is_the_further_position_and_a_new_epoch_wins(
    a: Position | None, b: Position | None, expected: Position | None
) -> None:
    assert _later(a, b) == expected


@pytest.mark.parametrize(
    ("event", "replayed_to", "expected"),
    [
        pytest.param(live(A_6_0), A_5_0, True, id="later-ms"),
        pytest.param(live(A_5_1), A_5_0, True, id="later-seq"),
        pytest.param(live(A_5_0), A_5_0, False, id="same-id"),
        pytest.param(live(A_5_0), A_5_1, False, id="earlier-seq"),
        pytest.param(live(A_5_1), A_6_0, False, id="earlier-ms"),
        pytest.param(live(B_1_0), A_6_0, True, id="other-epoch"),
        pytest.param(events.resync("bbbb:1-0"), A_5_0, True, id="resync-to-a-new-epoch"),
        pytest.param(events.resync("aaaa:9-0"), A_5_0, False, id="resync-already-replayed"),
        pytest.param(events.heartbeat("aaaa:1-0", 25), A_5_0, True, id="heartbeat"),
    ],
)
def test_newer_says_whether_a_live_event_is_news_after_a_replay(
    event: Event, replayed_to: Position, expected: bool
) -> None:
    assert _newer(event, replayed_to) is expected


# `POST /events` bodies


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def test_one_event_gives_one_draft_stamped_now() -> None:
    assert events.parse_batch(body(blog("p7")), now=NOW) == [
        Draft("blog_update", {"post_id": "p7", "action": "created"}, NOW)
    ]


def test_a_batch_gives_drafts_in_its_order() -> None:
    batch = [blog("p1"), comment("p1", "c9"), notice("down at 22:00", "warning")]
    drafts = events.parse_batch(body(batch), now=NOW)
    assert [(d.type, d.data) for d in drafts] == [(e["type"], e["data"]) for e in batch]
    assert {d.timestamp for d in drafts} == {NOW}


def test_a_batch_of_500_is_accepted() -> None:
    batch = [blog(f"p{i}") for i in range(events.MAX_BATCH)]
    assert len(events.parse_batch(body(batch), now=NOW)) == 500


def test_extra_data_fields_pass_through_untouched() -> None:
    data = {**POST, "title": "Hello", "tags": ["a", "b"], "meta": {"n": 1, "x": None}}
    (draft,) = events.parse_batch(body({"type": "blog_update", "data": data}), now=NOW)
    assert draft.data == data


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        pytest.param("2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z", id="utc"),
        pytest.param("2024-01-01T00:00:00", "2024-01-01T00:00:00Z", id="no-offset-is-utc"),
        pytest.param("2024-01-01T02:00:00+02:00", "2024-01-01T00:00:00Z", id="offset"),
        pytest.param("2024-01-01T00:00:00.5Z", "2024-01-01T00:00:00.500000Z", id="fraction"),
        pytest.param("2023-12-31T23:30:00-01:00", "2024-01-01T00:30:00Z", id="past-midnight"),
    ],
)
def test_a_timestamp_goes_out_in_utc(given: str, sent: str) -> None:
    raw = {**blog(), "timestamp": given}
    (draft,) = events.parse_batch(body(raw), now=NOW)
    assert draft.timestamp == sent


def test_loose_types_accept_any_name_of_the_pattern() -> None:
    raw = {"type": "poll.vote_cast", "data": {"n": 1}}
    (draft,) = events.parse_batch(body(raw), strict_types=False, now=NOW)
    assert draft == Draft("poll.vote_cast", {"n": 1}, NOW)


def refusal(raw: bytes, *, strict_types: bool = True) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        events.parse_batch(raw, strict_types=strict_types, now=NOW)
    return caught.value


def event(kind: Any = "blog_update", data: Any = None, **more: Any) -> dict[str, Any]:
    return {"type": kind, "data": POST if data is None else data, **more}


def batch_with(bad: dict[str, Any], at: int = 3) -> list[dict[str, Any]]:
    items = [event() for _ in range(5)]
    items[at] = bad
    return items


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        pytest.param(b"{", 400, "invalid_json", id="not-json"),
        pytest.param(b"", 400, "invalid_json", id="empty-body"),
        pytest.param(b'{"type": NaN}', 400, "invalid_json", id="nan"),
        pytest.param(b"[Infinity]", 400, "invalid_json", id="infinity"),
        pytest.param(b'{"type": "\xff"}', 400, "invalid_json", id="invalid-utf8"),
        pytest.param(b"[" * 2000 + b"]" * 2000, 400, "invalid_json", id="absurd-nesting"),
        pytest.param(b'"blog_update"', 400, "invalid_body", id="string"),
        pytest.param(b"null", 400, "invalid_body", id="null"),
        pytest.param(b"42", 400, "invalid_body", id="number"),
        pytest.param(b"[]", 400, "invalid_body", id="empty-batch"),
        pytest.param(body([event(), 1]), 400, "invalid_body", id="item-not-an-object"),
        pytest.param(body([event()] * 501), 413, "too_large", id="batch-of-501"),
    ],
)
def test_a_body_that_is_no_event_is_refused(raw: bytes, status: int, code: str) -> None:
    error = refusal(raw)
    assert (error.status, error.code) == (status, code)
    assert error.detail


@pytest.mark.parametrize(
    ("document", "detail"),
    [
        pytest.param(
            batch_with(event(data={"action": "created"})),
            "events[3].data.post_id: must be a non-empty string",
            id="contract-example",
        ),
        pytest.param(
            batch_with(event(data={"post_id": " ", "action": "created"}), at=0),
            "events[0].data.post_id: must be a non-empty string",
            id="blank-post-id",
        ),
        pytest.param(
            event(data={"post_id": 7, "action": "created"}),
            "data.post_id: must be a non-empty string",
            id="single-event-has-no-index",
        ),
        pytest.param(
            batch_with(event("comment_update", {"post_id": "p1", "action": "created"}), at=4),
            "events[4].data.comment_id: must be a non-empty string",
            id="missing-comment-id",
        ),
        pytest.param(
            batch_with(event(data={"post_id": "p1", "action": "liked"}), at=1),
            "events[1].data.action: must be one of created, updated, deleted",
            id="bad-action",
        ),
        pytest.param(
            event("system_notification", {"message": "hi", "level": "debug"}),
            "data.level: must be one of info, warning, error",
            id="bad-level",
        ),
        pytest.param(
            event("system_notification", {"message": "", "level": "info"}),
            "data.message: must be a non-empty string",
            id="empty-message",
        ),
        pytest.param(batch_with({"data": POST}, at=2), "events[2].type: is required", id="no-type"),
        pytest.param(event(5), "type: must be a string", id="type-not-a-string"),
        pytest.param(
            event("heartbeat"), "type: 'heartbeat' is reserved for the service", id="heartbeat"
        ),
        pytest.param(event("resync"), "type: 'resync' is reserved for the service", id="resync"),
        pytest.param(
            event("poll_vote"),
            "type: unknown type 'poll_vote' (known: blog_update, comment_update,"
            " system_notification)",
            id="unknown-type",
        ),
        pytest.param(event(data=["p1"]), "data: must be an object", id="data-not-an-object"),
        pytest.param({"type": "blog_update"}, "data: must be an object", id="no-data"),
        pytest.param(
            batch_with(event(id="e:1-0")),
            "events[3].id: unknown field (an event has only type, data and timestamp)",
            id="unknown-field",
        ),
        pytest.param(
            event(timestamp=1714564800),
            "timestamp: must be an ISO 8601 string",
            id="timestamp-not-a-string",
        ),
        pytest.param(
            event(timestamp="yesterday"),
            "timestamp: 'yesterday' is not an ISO 8601 time",
            id="timestamp-not-a-time",
        ),
    ],
)
def test_a_bad_event_is_refused_naming_its_place(document: Any, detail: str) -> None:
    error = refusal(body(document))
    assert (error.status, error.code, error.detail) == (422, "invalid_event", detail)


@pytest.mark.parametrize(
    ("kind", "detail"),
    [
        pytest.param("Poll", "type: must match ^[a-z][a-z0-9_.-]{0,63}$", id="upper-case"),
        pytest.param("9lives", "type: must match ^[a-z][a-z0-9_.-]{0,63}$", id="digit-first"),
        pytest.param("a" * 65, "type: must match ^[a-z][a-z0-9_.-]{0,63}$", id="65-chars"),
        pytest.param("heartbeat", "type: 'heartbeat' is reserved for the service", id="reserved"),
    ],
)
def test_loose_types_still_refuse_names_off_the_pattern(kind: str, detail: str) -> None:
    error = refusal(body(event(kind, {})), strict_types=False)
    assert (error.status, error.code, error.detail) == (422, "invalid_event", detail)


def test_the_first_bad_event_of_a_batch_is_named() -> None:
    items = batch_with(event(data={}), at=1)
    items[3] = {"data": POST}
    assert refusal(body(items)).detail == "events[1].data.post_id: must be a non-empty string"
