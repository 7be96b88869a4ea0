"""The machine-readable API: `GET /schema` (the event types) and `GET /openapi.json`.

The OpenAPI 3.1 document is made from the routes the app serves and the types in
force, so it cannot fall behind either; a route with no description here is left out,
and a test fails on it. Each route's operation is in `operations`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from . import __version__
from .operations import operations, ref
from .schemas import RESERVED_TYPES, EventTypes, Schema, document
from .settings import Settings

PREFIX = "/api/v1"
ERROR_CODES = (
    "invalid_json",
    "invalid_body",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "too_large",
    "too_many_requests",
    "unsupported_media_type",
    "invalid_event",
    "unavailable",
)


def served(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, method) for every route the app serves; `websocket` for a WebSocket."""
    for route in routes:
        if isinstance(route, Mount):
            yield from served(route.routes, prefix + route.path)
        elif isinstance(route, WebSocketRoute):
            yield prefix + route.path, "websocket"
        elif isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":  # starlette answers HEAD for every GET
                    yield prefix + route.path, method.lower()


def camel(name: str) -> str:
    return "".join(
        part.capitalize() for part in name.replace(".", "_").replace("-", "_").split("_")
    )


def components(types: EventTypes, strict: bool) -> dict[str, Schema]:
    """The event schemas, one per type, and the bodies every route answers with."""
    schemas: dict[str, Schema] = {
        "Error": {
            "type": "object",
            "required": ["error", "detail"],
            "properties": {
                "error": {
                    "type": "string",
                    "description": "a stable code: " + ", ".join(ERROR_CODES),
                    "examples": ["invalid_event"],
                },
                "detail": {"type": "string", "description": "names the place, e.g. events[3]"},
            },
        },
        "Ids": {
            "type": "object",
            "required": ["ids"],
            "properties": {"ids": {"type": "array", "items": {"type": "string"}}},
        },
        "Timestamp": {
            "type": "string",
            "description": "ISO 8601; with no offset taken as UTC; sent back in UTC with Z",
            "examples": ["2024-01-01T00:00:00Z"],
        },
    }
    events = []
    mapping = {}
    for name, data_schema in types.schemas.items():
        data = _rebased(data_schema, f"#/components/schemas/{camel(name)}Data")
        data.pop("$schema", None)
        data.pop("$id", None)
        schemas[f"{camel(name)}Data"] = data
        schemas[f"{camel(name)}Event"] = {
            "type": "object",
            "required": ["type", "data"],
            "additionalProperties": False,
            "properties": {
                "type": {"const": name},
                "data": ref(f"{camel(name)}Data"),
                "timestamp": ref("Timestamp"),
            },
        }
        events.append(ref(f"{camel(name)}Event"))
        mapping[name] = f"#/components/schemas/{camel(name)}Event"
    if not strict:
        schemas["OtherEvent"] = {
            "type": "object",
            "description": "strict typing is off: any other type with an object data",
            "required": ["type", "data"],
            "additionalProperties": False,
            "properties": {
                "type": {
                    "type": "string",
                    "pattern": "^[a-z][a-z0-9_.-]{0,63}$",
                    "not": {"enum": sorted({*types.names, *RESERVED_TYPES})},
                },
                "data": {"type": "object"},
                "timestamp": ref("Timestamp"),
            },
        }
        events.append(ref("OtherEvent"))
    event: Schema = {"oneOf": events}
    if strict:
        event["discriminator"] = {"propertyName": "type", "mapping": mapping}
    schemas["Event"] = event
    schemas.update(messages())
    return schemas


def _control(kind: str, data: Schema, description: str) -> Schema:
    return {
        "type": "object",
        "description": description + " (no id)",
        "required": ["type", "timestamp"],
        "properties": {"type": {"const": kind}, "data": data, "timestamp": ref("Timestamp")},
    }


def messages() -> dict[str, Schema]:
    """What a subscriber receives: one per WebSocket text frame or SSE `data:` record."""
    return {
        "DeliveredEvent": {
            "type": "object",
            "description": "an Event as published (see Event), with its id and timestamp",
            "required": ["id", "type", "data", "timestamp"],
            "properties": {
                "id": {"type": "string", "description": "opaque; a valid since"},
                "type": {"type": "string"},
                "data": {"type": "object"},
                "timestamp": ref("Timestamp"),
            },
        },
        "Heartbeat": _control(
            "heartbeat",
            {
                "type": "object",
                "properties": {"last_id": {"type": "string"}, "interval": {"type": "number"}},
            },
            "after a quiet interval; last_id is always a valid since",
        ),
        "Resync": _control(
            "resync",
            {
                "type": "object",
                "required": ["reason", "head"],
                "properties": {"reason": {"type": "string"}, "head": {"type": "string"}},
            },
            "since is no longer in history: refetch state, live events follow",
        ),
        "Readers": _control(
            "readers",
            {
                "type": "object",
                "required": ["post_id", "readers"],
                "properties": {"post_id": {"type": "string"}, "readers": {"type": "integer"}},
            },
            "the post's live reader count, with readers=1",
        ),
        "Message": {
            "description": "one WebSocket text frame, or one SSE data: record",
            "oneOf": [ref(n) for n in ("DeliveredEvent", "Heartbeat", "Resync", "Readers")],
        },
    }


def _rebased(node: Any, base: str) -> Any:
    """A copy of a type's schema whose local references point into this document.

    A type's `#/$defs/tag` means its own root; here that root sits under `base`.
    (Plain-name anchors, `#tag`, need no change.)
    """
    if isinstance(node, dict):
        return {
            key: base + value[1:]
            if key in ("$ref", "$dynamicRef")
            and isinstance(value, str)
            and (value == "#" or value.startswith("#/"))
            else _rebased(value, base)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rebased(item, base) for item in node]
    return node


def build(routes: Iterable[BaseRoute], settings: Settings, types: EventTypes) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes served, for these settings and types."""
    known = operations(settings)
    paths: dict[str, dict[str, Any]] = {}
    for path, method in served(routes):
        short = path.removeprefix(PREFIX) if path.startswith(PREFIX + "/") else path
        verb = "get" if method == "websocket" else method
        operation = known.get(short, {}).get(verb)
        if operation is None:
            continue
        operation = copy.deepcopy(operation)
        operation["operationId"] = (
            ("v1_" if short != path else "") + verb + short.replace("/", "_").replace(".", "_")
        )
        paths.setdefault(path, {})[verb] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wsbroadcast",
            "version": __version__,
            "description": "POST /events in; WebSocket and SSE out.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {
            "schemas": components(types, settings.strict_types),
            "securitySchemes": {
                "publishToken": {"type": "http", "scheme": "bearer"},
                "subscriberBearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "subscriberCookie": {"type": "apiKey", "in": "cookie", "name": "wsb_token"},
                "subscriberQuery": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }


# --- endpoints ------------------------------------------------------------------------------


def _json_response(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


async def schema(request: Request) -> Response:
    state = request.app.state
    return _json_response(document(state.types, state.settings.strict_types))


async def openapi(request: Request) -> Response:
    state = request.app.state
    if getattr(state, "openapi", None) is None:  # the routes and types are fixed: build once
        state.openapi = build(request.app.routes, state.settings, state.types)
    return _json_response(state.openapi)
