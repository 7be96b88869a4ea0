"""Validation micro-benchmark: a 500-event batch through `events.parse_batch`.

    python -m bench.validation [--repeat N]

Compares the built-ins' check compiled from their JSON Schemas (what the service runs)
with the hand-written rules it replaced (copied below as they were), and with the same
schemas checked by jsonschema, fastjsonschema and (when installed) jsonschema-rs. The
contract's bound: the built-ins at most 1.2x the hand-written time. Exits 1 past it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/validation.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from wsbroadcast.errors import InvalidBody, InvalidEvent
from wsbroadcast.events import EVENT_FIELDS, MAX_BATCH, Draft, _check_timestamp, loads, parse_batch
from wsbroadcast.schemas import (
    BUILTIN_SCHEMAS,
    BUILTINS,
    RESERVED_TYPES,
    EventTypes,
    _library_check,
)

BOUND = 1.2
Check = Callable[[dict[str, Any], str], None]

# The rules as they were written by hand before the built-ins became JSON Schemas.
ACTIONS = ("created", "updated", "deleted")
LEVELS = ("info", "warning", "error")
REQUIRED: dict[str, tuple[tuple[str, tuple[str, ...] | None], ...]] = {
    "blog_update": (("post_id", None), ("action", ACTIONS)),
    "comment_update": (("post_id", None), ("comment_id", None), ("action", ACTIONS)),
    "system_notification": (("message", None), ("level", LEVELS)),
}


def parse_batch_before(body: bytes, *, now: str) -> list[Draft]:
    """`events.parse_batch` as it was, strict typing on (its checks of the batch kept)."""
    document = loads(body)
    if isinstance(document, dict):
        return [parse_event_before(document, "", now)]
    if not isinstance(document, list) or not document or len(document) > MAX_BATCH:
        raise InvalidBody("not a batch")
    for index, item in enumerate(document):
        if not isinstance(item, dict):
            raise InvalidBody(f"events[{index}]: must be an object")
    return [
        parse_event_before(item, f"events[{index}].", now) for index, item in enumerate(document)
    ]


def parse_event_before(raw: dict[str, Any], where: str, now: str) -> Draft:
    for name in raw:
        if name not in EVENT_FIELDS:
            raise InvalidEvent(f"{where}{name}: unknown field")
    kind = raw.get("type")
    if kind is None:
        raise InvalidEvent(f"{where}type: is required")
    if not isinstance(kind, str):
        raise InvalidEvent(f"{where}type: must be a string")
    if kind in RESERVED_TYPES:
        raise InvalidEvent(f"{where}type: {kind!r} is reserved for the service")
    if kind not in REQUIRED:
        raise InvalidEvent(f"{where}type: unknown type {kind[:64]!r}")
    data = raw.get("data")
    if not isinstance(data, dict):
        raise InvalidEvent(f"{where}data: must be an object")
    for name, allowed in REQUIRED.get(kind, ()):
        value = data.get(name)
        if allowed is None:
            if not isinstance(value, str) or not value.strip():
                raise InvalidEvent(f"{where}data.{name}: must be a non-empty string")
        elif value not in allowed:
            raise InvalidEvent(f"{where}data.{name}: must be one of {', '.join(allowed)}")
    timestamp = raw.get("timestamp")
    stamp = now if timestamp is None else _check_timestamp(timestamp, where)
    return Draft(type=kind, data=data, timestamp=stamp)


def fastjsonschema_check(schema: dict[str, Any]) -> Check:
    import fastjsonschema

    validate = fastjsonschema.compile(
        {**schema, "$schema": "http://json-schema.org/draft-07/schema#"}
    )

    def check(data: dict[str, Any], where: str) -> None:
        try:
            validate(data)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise InvalidEvent(f"{where}{exc.message}") from None

    return check


def jsonschema_rs_check(schema: dict[str, Any]) -> Check | None:
    try:
        import jsonschema_rs
    except ImportError:
        return None
    validator = jsonschema_rs.Draft202012Validator(schema)

    def check(data: dict[str, Any], where: str) -> None:
        if not validator.is_valid(data):
            raise InvalidEvent(f"{where}data: invalid")

    return check


def with_checks(make: Callable[[str], Check | None]) -> EventTypes | None:
    checks = {name: make(name) for name in BUILTIN_SCHEMAS}
    if any(c is None for c in checks.values()):
        return None
    return EventTypes(BUILTIN_SCHEMAS, {k: v for k, v in checks.items() if v is not None})


def batch(size: int = 500) -> bytes:
    events: list[dict[str, Any]] = []
    for i in range(size):
        if i % 3 == 0:
            events.append(
                {"type": "blog_update", "data": {"post_id": f"p{i}", "action": "created"}}
            )
        elif i % 3 == 1:
            data = {"post_id": f"p{i}", "comment_id": f"c{i}", "action": "updated"}
            events.append({"type": "comment_update", "data": data})
        else:
            data = {"message": f"notice {i}", "level": "info"}
            events.append({"type": "system_notification", "data": data})
    return orjson.dumps(events)


def timed(types: EventTypes | None, body: bytes, repeat: int) -> float:
    """The fastest of `repeat` runs of one parse (after a warm-up): the least disturbed."""
    stamp = "2024-01-01T00:00:00Z"

    def run() -> object:
        if types is None:
            return parse_batch_before(body, now=stamp)
        return parse_batch(body, types=types, now=stamp)

    for _ in range(5):
        run()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        runs.append(time.perf_counter() - start)
    return min(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)
    body = batch()
    variants: dict[str, EventTypes | None] = {
        "hand-written (before)": None,
        "built-ins, compiled from the schemas (now)": BUILTINS,
        "jsonschema": with_checks(lambda name: _library_check(BUILTIN_SCHEMAS[name])),
        "fastjsonschema (draft-07)": with_checks(
            lambda name: fastjsonschema_check(BUILTIN_SCHEMAS[name])
        ),
        "jsonschema-rs": with_checks(lambda name: jsonschema_rs_check(BUILTIN_SCHEMAS[name])),
    }
    results: dict[str, float] = {}
    # Interleaved rounds, the fastest run of all: the one least disturbed by a neighbour.
    rounds: dict[str, list[float]] = {
        name: [] for name, t in variants.items() if t is not None or name.endswith("(before)")
    }
    for _ in range(5):
        for name in rounds:
            rounds[name].append(timed(variants[name], body, args.repeat // 5))
    base = min(rounds["hand-written (before)"])
    print(f"500-event batch of built-in types through parse_batch ({args.repeat} runs each)")
    for name, times in rounds.items():
        results[name] = min(times)
        ratio = results[name] / base
        print(f"  {name:<44} {results[name] * 1e3:8.3f} ms  {ratio:5.2f}x")
    ratio = results["built-ins, compiled from the schemas (now)"] / base
    print(json.dumps({"scenario": "validation", "ratio": round(ratio, 3), "bound": BOUND}))
    return 0 if ratio <= BOUND else 1


if __name__ == "__main__":
    sys.exit(main())
