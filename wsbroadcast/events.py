"""Events: validate a `POST /events` body into drafts; build each event's frame once.

Pure: no I/O, so the contract's tables test in milliseconds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from websockets.frames import Frame, Opcode

from .errors import InvalidBody, InvalidEvent, InvalidJSON, TooLarge
from .schemas import BUILTIN_SCHEMAS, BUILTINS, RESERVED_TYPES, TYPE_PATTERN, EventTypes

MAX_BATCH = 500
MAX_POST_ID = 256
KNOWN_TYPES = tuple(BUILTIN_SCHEMAS)
EVENT_FIELDS = frozenset({"type", "data", "timestamp"})


class Position(NamedTuple):
    """An id parsed: the stream's epoch, then a place in it ordered as (ms, seq)."""

    epoch: str
    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.ms}-{self.seq}"

    @property
    def place(self) -> tuple[int, int]:
        return (self.ms, self.seq)

    @classmethod
    def parse(cls, raw: str) -> Position | None:
        """The position an id names, or None when it is not an id at all."""
        epoch, sep, place = raw.rpartition(":")
        ms, dash, seq = place.partition("-")
        if not (sep and dash and raw.isascii() and epoch.isalnum()):  # isdigit() takes "²"
            return None
        if not (_digits(ms) and _digits(seq) and len(ms) < 20 and len(seq) < 20):
            return None
        return cls(epoch, int(ms), int(seq))


def _digits(text: str) -> bool:
    # ASCII only: str.isdigit() takes `²` and `①`, which int() then refuses.
    return text.isascii() and text.isdigit()


@dataclass(frozen=True, slots=True)
class Draft:
    """A validated event, before the broker gives it an id."""

    type: str
    data: dict[str, Any]
    timestamp: str


@dataclass(frozen=True, slots=True)
class Event:
    """A message as every subscriber receives it, encoded once for all of them.

    Control messages (`heartbeat`, `resync`, `readers`) have no id and no position.
    """

    type: str
    data: Mapping[str, Any] | None
    timestamp: str
    id: str | None = None
    position: Position | None = None
    post_id: str | None = None
    # A heartbeat's `id:` line for SSE: a filtered stream's position moves past the last
    # id it sent, and EventSource resumes from the last id it kept.
    sse_id: str | None = None
    # The whole WebSocket frame: unmasked and uncompressed, the same bytes go to every
    # subscriber (see `transports`). The JSON text in it is what every transport sends.
    ws_frame: bytes = field(init=False, repr=False)
    # The ASGI messages for the other paths, built on first use: history keeps up to
    # thousands of events, and most deployments never need them.
    _message: dict[str, Any] | None = field(init=False, repr=False, default=None)
    _sse: dict[str, Any] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        envelope: dict[str, Any] = {"type": self.type}
        if self.id is not None:
            envelope = {"id": self.id, **envelope}
        if self.data is not None:
            envelope["data"] = self.data
        envelope["timestamp"] = self.timestamp
        # Not kept: orjson's bytes can hold many times their length (16 KB for 1 KB here).
        payload = orjson.dumps(envelope)
        object.__setattr__(self, "ws_frame", Frame(Opcode.TEXT, payload).serialize(mask=False))

    @property
    def payload(self) -> bytes:
        """The JSON text: the frame past its 2, 4 or 10 byte header (RFC 6455 5.2)."""
        length = self.ws_frame[1] & 0x7F
        return self.ws_frame[2 if length < 126 else 4 if length == 126 else 10 :]

    @property
    def message(self) -> dict[str, Any]:
        """The ASGI message for a WebSocket subscriber whose socket is out of reach."""
        if self._message is None:
            message = {"type": "websocket.send", "text": self.payload.decode()}
            object.__setattr__(self, "_message", message)
            return message
        return self._message

    @property
    def sse(self) -> dict[str, Any]:
        """The ASGI message for an SSE subscriber: an `id:`/`data:` record."""
        if self._sse is None:
            if self.type == "heartbeat":  # a comment: EventSource ignores it, proxies see traffic
                record = b": heartbeat " + self.timestamp.encode() + b"\n\n"
                if self.sse_id:  # EventSource keeps it as its last id, dispatching nothing
                    record = b"id: " + self.sse_id.encode() + b"\n" + record
            else:
                record = b"data: " + self.payload + b"\n\n"
                if self.id is not None:
                    record = b"id: " + self.id.encode() + b"\n" + record
            sse = {"type": "http.response.body", "body": record, "more_body": True}
            object.__setattr__(self, "_sse", sse)
            return sse
        return self._sse


def make_event(draft: Draft, position: Position) -> Event:
    post_id = draft.data.get("post_id")
    return Event(
        type=draft.type,
        data=draft.data,
        timestamp=draft.timestamp,
        id=str(position),
        position=position,
        post_id=post_id if isinstance(post_id, str) else None,
    )


def heartbeat(last_id: str, interval: float, *, filtered: bool = False) -> Event:
    """`last_id`: how far the subscriber's stream has got, always a valid `since`."""
    seconds = int(interval) if interval == int(interval) else interval
    data = {"last_id": last_id, "interval": seconds}
    sse_id = last_id if filtered and last_id else None
    return Event(type="heartbeat", data=data, timestamp=now_timestamp(), sse_id=sse_id)


def resync(head: str, reason: str = "history_expired") -> Event:
    return Event(type="resync", data={"reason": reason, "head": head}, timestamp=now_timestamp())


def readers(post_id: str, count: int) -> Event:
    """A post's live reader count, for its subscribers that asked `readers=1`."""
    data = {"post_id": post_id, "readers": count}
    return Event(type="readers", data=data, timestamp=now_timestamp())


def format_timestamp(moment: datetime) -> str:
    """UTC as `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`, fractions kept."""
    moment = moment.astimezone(UTC)
    # Not strftime("%Y"): glibc writes year 1 as `1`, the contract wants four digits.
    text = f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}"
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


def now_timestamp() -> str:
    return format_timestamp(datetime.now(UTC))


def loads(body: bytes) -> Any:
    """Strict JSON: NaN, Infinity, invalid UTF-8 and absurd nesting are refused, and so
    are what orjson would change silently: integers beyond 64 bits (made floats) and
    duplicate keys (the last kept). `data` passes through untouched, or not at all."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # Older orjson words the nesting limit otherwise: one message whatever the version.
        reason = str(exc).replace("array and object recursion depth", "depth limit")
        raise InvalidJSON(f"body is not valid JSON: {reason}") from None
    if _may_change(body, document):
        _check_exact(body)
    return document


# Digits to zeros: a run of 19 zeros then marks 19 digits in a row (a regex scan for them
# costs four times orjson's whole parse).
DIGITS_TO_ZEROS = bytes.maketrans(b"0123456789", b"0" * 10)
INT_RANGE = (-(1 << 63), (1 << 64) - 1)  # what orjson keeps as an integer
EXACT_RECURSION = 4000  # room for orjson's 1,024 levels and the stack beneath the parse


def _may_change(body: bytes, document: Any) -> bool:
    """Whether orjson may have changed what `body` says; False rules it out, cheaply.

    An integer past 64 bits has 19 digits or more in a row. A duplicate key: unless the
    body spells a colon `\\u003a`, each of its colons is a key's or one in a string, and
    orjson writes both back as they are, so the compact form of what was parsed has as
    many colons as the body only if no key, nor anything in its value, was dropped.
    """
    digits = body.translate(DIGITS_TO_ZEROS)
    if b"0" * 19 in digits or b"\\u003a" in body or b"\\u003A" in body:
        return True
    try:
        return orjson.dumps(document).count(b":") != body.count(b":")
    except orjson.JSONEncodeError:  # nested deeper than orjson writes
        return True


def _check_exact(body: bytes) -> None:
    """Parse again with the standard library, which keeps every key and integer as
    written, to refuse a duplicate key or an integer orjson would make a float."""
    # orjson takes 1,024 levels; the standard parser spends a recursion level on each.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, EXACT_RECURSION))
    try:
        json.loads(body, object_pairs_hook=_unique_keys, parse_int=_int64)
    except RecursionError:
        raise InvalidJSON("body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # never seen: orjson is the stricter, but never a 500
        raise InvalidJSON(f"body is not valid JSON: {exc}") from None
    finally:
        sys.setrecursionlimit(limit)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise InvalidJSON(
                f"body has the key {key[:64]!r} twice in one object: send each key once"
            )
        seen.add(key)
    return dict(pairs)


def _int64(text: str) -> int:
    value = int(text) if len(text) <= 21 else None
    if value is None or not INT_RANGE[0] <= value <= INT_RANGE[1]:
        raise InvalidJSON(
            f"body has the integer {text[:24]}{'...' if len(text) > 24 else ''}, beyond "
            "64 bits: it would lose precision; send it as a string"
        )
    return value


def parse_batch(
    body: bytes,
    *,
    strict_types: bool = True,
    types: EventTypes = BUILTINS,
    now: str | None = None,
) -> list[Draft]:
    """Validate a body holding one event or an array of them; all or nothing."""
    document = loads(body)
    stamp = now or now_timestamp()
    if isinstance(document, dict):
        return [parse_event(document, "", strict_types=strict_types, types=types, now=stamp)]
    if not isinstance(document, list):
        raise InvalidBody("body must be an event object or an array of event objects")
    if not document:
        raise InvalidBody("body is an empty array: send 1 to 500 events")
    if len(document) > MAX_BATCH:
        raise TooLarge(f"batch of {len(document)} events is over the limit of {MAX_BATCH}")
    for index, item in enumerate(document):
        if not isinstance(item, dict):
            raise InvalidBody(f"events[{index}]: must be an object")
    return [
        parse_event(item, f"events[{index}].", strict_types=strict_types, types=types, now=stamp)
        for index, item in enumerate(document)
    ]


def parse_event(
    raw: dict[str, Any],
    where: str = "",
    *,
    strict_types: bool = True,
    types: EventTypes = BUILTINS,
    now: str | None = None,
) -> Draft:
    """Validate one event object; `where` prefixes every place named in an error."""
    for name in raw:
        if name not in EVENT_FIELDS:
            raise InvalidEvent(
                f"{where}{name[:64]}: unknown field (an event has only type, data and timestamp)"
            )
    kind = _check_type(raw.get("type"), where, strict_types, types)
    data = raw.get("data")
    if not isinstance(data, dict):
        raise InvalidEvent(f"{where}data: must be an object")
    check = types.checks.get(kind)
    if check is not None:  # None: an unknown type, let in with strict typing off
        check(data, where)
    post_id = data.get("post_id")
    if isinstance(post_id, str) and len(post_id) > MAX_POST_ID:
        # A filter is at most 256 characters long: it could never match this.
        raise InvalidEvent(f"{where}data.post_id: must be at most {MAX_POST_ID} characters")
    timestamp = raw.get("timestamp")
    if timestamp is None:
        stamp = now or now_timestamp()
    else:
        stamp = _check_timestamp(timestamp, where)
    return Draft(type=kind, data=data, timestamp=stamp)


def _check_type(kind: object, where: str, strict_types: bool, types: EventTypes) -> str:
    if kind is None:
        raise InvalidEvent(f"{where}type: is required")
    if not isinstance(kind, str):
        raise InvalidEvent(f"{where}type: must be a string")
    if kind in RESERVED_TYPES:
        raise InvalidEvent(f"{where}type: {kind!r} is reserved for the service")
    if kind in types.checks:
        return kind
    if strict_types:
        raise InvalidEvent(
            f"{where}type: unknown type {kind[:64]!r} (known: {', '.join(types.names)})"
        )
    if not TYPE_PATTERN.fullmatch(kind):
        raise InvalidEvent(f"{where}type: must match ^[a-z][a-z0-9_.-]{{0,63}}$")
    return kind


def _check_timestamp(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidEvent(f"{where}timestamp: must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(f"{where}timestamp: {value[:40]!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:  # no offset: taken as UTC
        moment = moment.replace(tzinfo=UTC)
    try:
        return format_timestamp(moment)
    except OverflowError:  # `0001-01-01T00:00:00+14:00` is before year 1 in UTC
        raise InvalidEvent(f"{where}timestamp: {value[:40]!r} is out of range in UTC") from None


def parse_filter_types(raw: str) -> frozenset[str]:
    """`types=a,b` into a set; ValueError names the first that cannot be a type."""
    names = frozenset(n.strip() for n in raw.split(",") if n.strip())
    for name in names:
        if not TYPE_PATTERN.fullmatch(name):
            raise ValueError(f"types: {name[:64]!r} cannot be an event type")
    if not names:
        raise ValueError("types: names no type")
    return names
