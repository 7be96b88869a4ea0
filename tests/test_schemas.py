"""A blog's own event types (WSB_EVENT_TYPES) and the built-ins written as JSON Schemas.

Pure: no server. The built-ins' compiled check is held to jsonschema on the same schemas.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from wsbroadcast.errors import InvalidEvent
from wsbroadcast.events import parse_batch
from wsbroadcast.schemas import (
    BUILTIN_SCHEMAS,
    BUILTINS,
    EventTypes,
    SchemaFileError,
    _fast_check,
    load_file,
)
from wsbroadcast.settings import SettingsError, load_settings

LIKES: dict[str, Any] = {
    "type": "object",
    "required": ["post_id", "likes"],
    "properties": {
        "post_id": {"type": "string", "minLength": 1},
        "likes": {"type": "integer", "minimum": 0},
        "voters": {"type": "array", "items": {"$ref": "#/$defs/voter"}},
    },
    "$defs": {"voter": {"type": "string"}},
}


def write(tmp_path: Path, document: Any) -> str:
    path = tmp_path / "types.json"
    path.write_bytes(document if isinstance(document, bytes) else orjson.dumps(document))
    return str(path)


def refusal(body: Any, types: EventTypes = BUILTINS, strict: bool = True) -> str:
    with pytest.raises(InvalidEvent) as caught:
        parse_batch(orjson.dumps(body), types=types, strict_types=strict)
    return caught.value.detail


# --- loading a file ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (b"{not json", "is not JSON"),
        ([], 'must hold an object {"types"'),
        ({"types": []}, 'must hold an object {"types"'),
        ({"types": {}, "version": 2}, "at version: unknown field"),
        ({"types": {"Likes": LIKES}}, "at types.Likes: not a type name"),
        ({"types": {"heartbeat": LIKES}}, "at types.heartbeat: 'heartbeat' is reserved"),
        ({"types": {"readers": LIKES}}, "at types.readers: 'readers' is reserved"),
        ({"types": {"like_update": 3}}, "at types.like_update: must be a JSON Schema object"),
        (
            {"types": {"like_update": {"type": "integr"}}},
            "at types.like_update.type: 'integr' is not valid",
        ),
        (
            {"types": {"like_update": {"properties": {"n": {"minimum": "0"}}}}},
            "at types.like_update.properties.n.minimum: '0' is not of type 'number'",
        ),
        (
            {"types": {"like_update": {"$schema": "http://json-schema.org/draft-07/schema#"}}},
            "at types.like_update.$schema: only https://json-schema.org/draft/2020-12/schema",
        ),
        (
            {"types": {"like_update": {"$ref": "https://example.com/likes.json"}}},
            "at types.like_update.$ref: only references within the schema",
        ),
        (
            {"types": {"like_update": {"properties": {"n": {"$ref": "#/$defs/missing"}}}}},
            "at types.like_update.properties.n.$ref: '#/$defs/missing' names nothing",
        ),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "types-not-an-object",
        "unknown-top-field",
        "bad-name",
        "reserved-heartbeat",
        "reserved-readers",
        "schema-not-an-object",
        "bad-type-keyword",
        "bad-keyword-value",
        "other-dialect",
        "remote-ref",
        "dangling-ref",
    ],
)
def test_a_bad_types_file_is_refused_naming_the_place(
    tmp_path: Path, document: Any, expected: str
) -> None:
    with pytest.raises(SchemaFileError) as caught:
        load_file(write(tmp_path, document))
    assert expected in str(caught.value)


def test_an_unreadable_types_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SchemaFileError, match="cannot be read: No such file"):
        load_file(str(tmp_path / "missing.json"))


def test_a_bad_types_file_stops_the_settings_naming_wsb_event_types(tmp_path: Path) -> None:
    path = write(tmp_path, {"types": {"like_update": {"type": "integr"}}})
    with pytest.raises(SettingsError) as caught:
        load_settings(environ={"WSB_EVENT_TYPES": path}, env_file=None)
    message = str(caught.value)
    assert message.startswith("WSB_EVENT_TYPES: ") and "at types.like_update.type" in message
    assert "\n" not in message
    with pytest.raises(SettingsError, match=r"^--event-types: "):
        load_settings(["--event-types", path], environ={}, env_file=None)


def test_the_service_refuses_to_start_on_a_bad_types_file_with_one_line_and_exit_2(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, {"types": {"resync": {}}})
    done = subprocess.run(
        [sys.executable, "-m", "wsbroadcast", "--event-types", path, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"wsbroadcast: --event-types: {path!r} at types.resync: "
        "'resync' is reserved for the service"
    ]


# --- the built-ins as schemas --------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "detail"),
    [
        (
            {"type": "blog_update", "data": {"post_id": " ", "action": "created"}},
            "data.post_id: must be a non-empty string",
        ),
        (
            {"type": "blog_update", "data": {"action": "created"}},
            "data.post_id: must be a non-empty string",
        ),
        (
            {"type": "blog_update", "data": {"post_id": "p", "action": "moved"}},
            "data.action: must be one of created, updated, deleted",
        ),
        (
            {"type": "comment_update", "data": {"post_id": "p", "action": "created"}},
            "data.comment_id: must be a non-empty string",
        ),
        (
            {"type": "system_notification", "data": {"message": "m", "level": "loud"}},
            "data.level: must be one of info, warning, error",
        ),
    ],
    ids=["blank-post-id", "no-post-id", "bad-action", "no-comment-id", "bad-level"],
)
def test_the_built_ins_written_as_schemas_keep_their_messages(
    event: dict[str, Any], detail: str
) -> None:
    assert refusal(event) == detail
    batch = [{"type": "blog_update", "data": {"post_id": "p", "action": "created"}}] * 3
    assert refusal([*batch, event]) == f"events[3].{detail}"


def test_the_built_ins_take_the_compiled_path() -> None:
    for name, schema in BUILTIN_SCHEMAS.items():
        assert _fast_check(schema) is not None, name
        assert BUILTINS.checks[name] is not None


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(["", " ", "\t\n", "\u2003", "p1", " x ", "created", "info", "deleted"]),
    st.text(max_size=4),
    st.lists(st.text(max_size=2), max_size=2),
)
datas = st.dictionaries(
    st.sampled_from(["post_id", "comment_id", "action", "message", "level", "extra"]),
    values,
    max_size=6,
)


@settings(max_examples=200, deadline=None, database=None)
@given(kind=st.sampled_from(sorted(BUILTIN_SCHEMAS)), data=datas)
def test_the_compiled_built_ins_agree_with_jsonschema_on_the_same_schemas(
    kind: str, data: dict[str, Any]
) -> None:
    expected = Draft202012Validator(BUILTIN_SCHEMAS[kind]).is_valid(data)
    try:
        BUILTINS.check(kind, data, "")
        accepted = True
    except InvalidEvent:
        accepted = False
    assert accepted == expected


# --- a blog's own types ---------------------------------------------------------------------


def test_a_blogs_own_type_is_accepted_and_refused_naming_the_place(tmp_path: Path) -> None:
    types = EventTypes.from_file(write(tmp_path, {"types": {"like_update": LIKES}}))
    good = {"type": "like_update", "data": {"post_id": "p1", "likes": 3, "voters": ["a"]}}
    [draft] = parse_batch(orjson.dumps(good), types=types)
    assert draft.type == "like_update" and draft.data["likes"] == 3
    blog = {"type": "blog_update", "data": {"post_id": "p1", "action": "created"}}
    bad = {"type": "like_update", "data": {"post_id": "p1", "likes": "many"}}
    assert refusal([blog, blog, bad], types) == "events[2].data.likes: must be an integer"
    missing = {"type": "like_update", "data": {"likes": 1}}
    assert refusal(missing, types) == "data.post_id: is required"
    voter = {"type": "like_update", "data": {"post_id": "p1", "likes": 1, "voters": ["a", 7]}}
    assert refusal(voter, types) == "data.voters[1]: must be a string"
    below = {"type": "like_update", "data": {"post_id": "p1", "likes": -1}}
    assert refusal(below, types) == "data.likes: -1 is less than the minimum of 0"
    # The built-ins stay, and an unknown type names every type in force.
    assert refusal({"type": "nope", "data": {}}, types) == (
        "type: unknown type 'nope' (known: blog_update, comment_update, "
        "system_notification, like_update)"
    )


def test_a_file_can_replace_a_built_ins_rules(tmp_path: Path) -> None:
    schema = {"type": "object", "required": ["post_id"], "properties": {"post_id": NON_BLANK}}
    types = EventTypes.from_file(write(tmp_path, {"types": {"blog_update": schema}}))
    [draft] = parse_batch(b'{"type": "blog_update", "data": {"post_id": "p"}}', types=types)
    assert draft.data == {"post_id": "p"}  # no action needed any more
    assert refusal({"type": "blog_update", "data": {}}, types) == "data.post_id: is required"


NON_BLANK = {"type": "string", "minLength": 1}


def test_with_strict_typing_off_a_file_still_checks_its_types_and_others_pass(
    tmp_path: Path,
) -> None:
    types = EventTypes.from_file(write(tmp_path, {"types": {"like_update": LIKES}}))
    bad = {"type": "like_update", "data": {"post_id": "p1"}}
    assert refusal(bad, types, strict=False) == "data.likes: is required"
    other = b'{"type": "poll_update", "data": {"anything": [1, 2]}}'
    [draft] = parse_batch(other, types=types, strict_types=False)
    assert draft.type == "poll_update"
    with pytest.raises(InvalidEvent, match="unknown type 'poll_update'"):
        parse_batch(other, types=types, strict_types=True)


def test_a_recursive_schema_over_deeply_nested_data_is_refused_not_crashed(
    tmp_path: Path,
) -> None:
    tree = {"type": "object", "properties": {"child": {"$ref": "#"}}}
    types = EventTypes.from_file(write(tmp_path, {"types": {"tree": tree}}))
    depth = 1000  # orjson refuses past 1024
    body = b'{"type": "tree", "data": ' + b'{"child": ' * depth + b"{}" + b"}" * depth + b"}"
    try:
        parse_batch(body, types=types)
    except InvalidEvent as refused:  # refused as an event, never a crash
        assert refused.detail.startswith("data")
