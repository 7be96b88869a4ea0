"""Event types as JSON Schemas (2020-12): the built-ins, a blog's own file, their checks.

The built-ins are written here as JSON Schema, the one source of their rules: `/schema`,
the OpenAPI document and the web client's TypeScript types are made from it. Their
check is compiled from the same schemas into a few dict look-ups (`_fast_check`), as
fast as the hand-written rules it replaced; any other schema is checked by `jsonschema`,
imported only when a blog declares its own types.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .errors import InvalidEvent

if TYPE_CHECKING:
    from jsonschema import ValidationError

DIALECT = "https://json-schema.org/draft/2020-12/schema"
TYPE_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
RESERVED_TYPES = frozenset({"heartbeat", "resync", "readers"})
MAX_DETAIL = 200  # a validator's reason can quote a whole value

Schema = dict[str, Any]
Check = Callable[[dict[str, Any], str], None]

# A non-empty string: at least one character that is not white space (as `str.strip`).
NON_EMPTY: Schema = {"type": "string", "pattern": r"\S"}
ACTION: Schema = {"enum": ["created", "updated", "deleted"]}


def _object(title: str, **properties: Schema) -> Schema:
    return {
        "title": title,
        "type": "object",
        "properties": properties,
        "required": list(properties),
        # Extra fields pass through untouched (the contract), so no additionalProperties.
    }


BUILTIN_SCHEMAS: dict[str, Schema] = {
    "blog_update": _object("BlogUpdateData", post_id=NON_EMPTY, action=ACTION),
    "comment_update": _object(
        "CommentUpdateData", post_id=NON_EMPTY, comment_id=NON_EMPTY, action=ACTION
    ),
    "system_notification": _object(
        "SystemNotificationData",
        message=NON_EMPTY,
        level={"enum": ["info", "warning", "error"]},
    ),
}


class SchemaFileError(ValueError):
    """`WSB_EVENT_TYPES` names a file that cannot be used; the message names the place."""


# --- loading a blog's file ---------------------------------------------------------------


def load_file(path: str) -> dict[str, Schema]:
    """The `types` of a `{"types": {name: schema}}` file, each schema checked; SchemaFileError."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SchemaFileError(f"cannot be read: {exc.strerror or exc}") from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SchemaFileError(f"is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("types"), dict):
        raise SchemaFileError('must hold an object {"types": {"<type>": <JSON Schema>, ...}}')
    unknown = sorted(set(document) - {"types"})
    if unknown:
        raise SchemaFileError(f"at {unknown[0]}: unknown field (the file has only types)")
    types: dict[str, Schema] = document["types"]
    for name, schema in types.items():
        check_schema(name, schema)
    return types


def check_schema(name: str, schema: object) -> None:
    """Refuse a type name or a schema that cannot be used, naming the place."""
    from jsonschema import Draft202012Validator, SchemaError

    place = f"types.{name}"
    if not TYPE_PATTERN.fullmatch(name):
        raise SchemaFileError(f"at {place}: not a type name (^[a-z][a-z0-9_.-]{{0,63}}$)")
    if name in RESERVED_TYPES:
        raise SchemaFileError(f"at {place}: {name!r} is reserved for the service")
    if not isinstance(schema, dict):
        raise SchemaFileError(f"at {place}: must be a JSON Schema object")
    dialect = schema.get("$schema", DIALECT)
    if not isinstance(dialect, str) or dialect.rstrip("#") != DIALECT:
        raise SchemaFileError(f"at {place}.$schema: only {DIALECT} is supported")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise SchemaFileError(
            f"at {place}{_path(exc.absolute_path)}: {_clip(exc.message)}"
        ) from None
    for where, ref in _refs(schema, place):
        # Only references inside the schema itself: the service never fetches one.
        if not ref.startswith("#"):
            raise SchemaFileError(f"at {where}: only references within the schema (#...)")
        _resolve(schema, ref, where)


def _refs(node: object, place: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield f"{place}.{key}", value
            else:
                yield from _refs(value, f"{place}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _refs(item, f"{place}[{index}]")


def _resolve(schema: Schema, ref: str, where: str) -> None:
    from referencing import Registry, Resource
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    uri = resource.id() or "urn:wsbroadcast:type"
    try:
        Registry().with_resource(uri, resource).resolver(uri).lookup(ref)
    except Unresolvable:
        raise SchemaFileError(f"at {where}: {ref!r} names nothing in the schema") from None


# --- checking an event's data ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventTypes:
    """Every type in force: its schema, and the compiled check of its `data`."""

    schemas: Mapping[str, Schema]
    checks: Mapping[str, Check]

    @classmethod
    def build(cls, own: Mapping[str, Schema] | None = None) -> EventTypes:
        """The built-ins, with a blog's own types added or put in their place."""
        schemas = {**BUILTIN_SCHEMAS, **(own or {})}
        checks = {
            name: (_fast_check(schema) if schema is BUILTIN_SCHEMAS.get(name) else None)
            or _library_check(schema)
            for name, schema in schemas.items()
        }
        return cls(schemas, checks)

    @classmethod
    def from_file(cls, path: str | None) -> EventTypes:
        return cls.build(load_file(path)) if path else BUILTINS

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.schemas)

    def check(self, kind: str, data: dict[str, Any], where: str) -> None:
        """Raise InvalidEvent naming the place when `data` fails the type's schema."""
        self.checks[kind](data, where)


def _fast_check(schema: Schema) -> Check | None:
    """The built-ins' shape compiled to look-ups, or None for a schema of another shape.

    The shape: an object whose properties are all required, each either NON_EMPTY or an
    `enum` of strings. A test checks that it agrees with `jsonschema` on the built-ins.
    """
    properties = schema.get("properties")
    if (
        set(schema) - {"title", "description"} != {"type", "properties", "required"}
        or schema["type"] != "object"
        or not isinstance(properties, dict)
        or schema["required"] != list(properties)
    ):
        return None
    rules: list[tuple[str, tuple[str, ...] | None]] = []
    for name, rule in properties.items():
        if rule == NON_EMPTY:
            rules.append((name, None))
        elif set(rule) == {"enum"} and all(isinstance(v, str) for v in rule["enum"]):
            rules.append((name, tuple(rule["enum"])))
        else:
            return None

    def check(data: dict[str, Any], where: str) -> None:
        for name, allowed in rules:
            value = data.get(name)
            if allowed is None:
                if not isinstance(value, str) or not value.strip():
                    raise InvalidEvent(f"{where}data.{name}: must be a non-empty string")
            elif value not in allowed:
                raise InvalidEvent(f"{where}data.{name}: must be one of {', '.join(allowed)}")

    return check


def _library_check(schema: Schema) -> Check:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    validator = Draft202012Validator(schema)

    def check(data: dict[str, Any], where: str) -> None:
        try:
            error = best_match(validator.iter_errors(data))
        except RecursionError:  # a recursive schema over data nested as deep as JSON allows
            raise InvalidEvent(f"{where}data: nested too deeply to check") from None
        if error is not None:
            place, reason = describe(error)
            raise InvalidEvent(f"{where}data{place}: {reason}")

    return check


def describe(error: ValidationError) -> tuple[str, str]:
    """A validator's error as the contract's place (`.likes`, `[2]`) and a short reason."""
    place = _path(error.absolute_path)
    value = error.validator_value
    kind = error.validator
    if kind == "required" and isinstance(value, list) and isinstance(error.instance, dict):
        missing = [name for name in value if name not in error.instance]
        if missing:
            return f"{place}.{missing[0]}", "is required"
    if kind == "type":
        names = value if isinstance(value, list) else [value]
        return place, "must be " + " or ".join(_TYPE_WORDS.get(str(n), str(n)) for n in names)
    if kind == "enum" and isinstance(value, list):
        return place, "must be one of " + ", ".join(_shown(v) for v in value)
    if kind == "const":
        return place, f"must be {_shown(value)}"
    if kind == "pattern" and value == NON_EMPTY["pattern"]:
        return place, "must be a non-empty string"
    return place, _clip(error.message)


_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "object": "an object",
    "array": "an array",
    "boolean": "true or false",
    "null": "null",
}


def _shown(value: object) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _path(parts: Iterator[Any] | Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


BUILTINS = EventTypes.build()


def document(types: EventTypes, strict: bool) -> dict[str, Any]:
    """The body of `GET /schema`: every type in force, and whether others are refused."""
    return {"strict": strict, "types": dict(types.schemas)}
