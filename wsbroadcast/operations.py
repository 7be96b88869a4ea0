"""Each route's OpenAPI operation: parameters, request body, every response and error body.

`openapi.build` puts these under the paths the app serves, at both prefixes.
"""

from __future__ import annotations

from typing import Any

from .events import MAX_BATCH
from .schemas import Schema
from .settings import Settings


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str, *codes: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response = _json(ref("Error"), description + f" (`error`: {', '.join(codes)})")
    if headers:
        response["headers"] = headers
    return response


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}}


def operations(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each short path's operations, by method; the `/api/v1` copies are made from these."""
    publish_auth: list[dict[str, list[str]]] = (
        [{"publishToken": []}] if settings.publish_token else []
    )
    subscriber_auth: list[dict[str, list[str]]] = (
        [{"subscriberBearer": []}, {"subscriberCookie": []}, {"subscriberQuery": []}]
        if settings.jwt_secret
        else []
    )
    filters = [
        _query("since", "resume after this id"),
        _query("types", "comma list of types to deliver"),
        _query("post_id", "only events with this data.post_id, and those with none"),
        _query("rewind", "begin with the last N events (1 to 100)", {"type": "integer"}),
        _query("readers", "1: also reader counts for post_id", {"type": "string"}),
    ]
    refused = {"401": _error("subscriber token missing or wrong", "unauthorized")}
    return {
        "/events": {
            "post": {
                "summary": "Publish one event or a batch",
                "security": publish_auth,
                "parameters": [
                    _query(
                        "dry_run", "validate only", {"type": "string", "enum": ["true", "false"]}
                    ),
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "a repeat within 10 minutes publishes nothing",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 256},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    ref("Event"),
                                    {
                                        "type": "array",
                                        "items": ref("Event"),
                                        "minItems": 1,
                                        "maxItems": MAX_BATCH,
                                    },
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "202": _json(ref("Ids"), "published: the ids in the batch's order"),
                    "200": _json(ref("Ids"), "dry_run: valid, nothing published"),
                    "400": _error("not JSON, not events", "invalid_json", "invalid_body"),
                    "401": _error(
                        "publish token missing or wrong",
                        "unauthorized",
                        headers={"WWW-Authenticate": {"schema": {"type": "string"}}},
                    ),
                    "413": _error("body or batch too large", "too_large"),
                    "415": _error("not a JSON content type", "unsupported_media_type"),
                    "422": _error("an event fails validation", "invalid_event"),
                    "503": _error("broker unreachable", "unavailable", headers=RETRY_AFTER),
                },
            }
        },
        "/events/head": {
            "get": {
                "summary": "The newest position, always a valid since",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["id"],
                            "properties": {"id": {"type": "string"}},
                        },
                        "the head",
                    ),
                    "503": _error("broker unreachable", "unavailable", headers=RETRY_AFTER),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "responses": {"200": _json(_status(), "the process serves")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the broker is reachable",
                "responses": {
                    "200": _json(_status(), "ready"),
                    "503": _error("broker unreachable", "unavailable", headers=RETRY_AFTER),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text format",
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/readers": {
            "get": {
                "summary": "Live reader counts, over every instance on the broker",
                "description": (
                    "With `post_id`: that post's readers (0 when no one reads it). Without: "
                    "`total` subscribers and the `top` posts by readers, ties by post_id. "
                    "Auth and Origin as for /sse; not rate-limited."
                ),
                "security": subscriber_auth,
                "parameters": [
                    _query(
                        "post_id",
                        "one post's count",
                        {"type": "string", "minLength": 1, "maxLength": 256},
                    ),
                    _query(
                        "top",
                        "how many posts (1 to 100, default 10)",
                        {"type": "integer", "minimum": 1, "maximum": 100},
                    ),
                ],
                "responses": {
                    "200": _json(
                        {
                            "oneOf": [
                                {
                                    "type": "object",
                                    "required": ["post_id", "readers"],
                                    "properties": {
                                        "post_id": {"type": "string"},
                                        "readers": {"type": "integer", "minimum": 0},
                                    },
                                },
                                {
                                    "type": "object",
                                    "required": ["total", "posts"],
                                    "properties": {
                                        "total": {"type": "integer", "minimum": 0},
                                        "posts": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "required": ["post_id", "readers"],
                                                "properties": {
                                                    "post_id": {"type": "string"},
                                                    "readers": {"type": "integer"},
                                                },
                                            },
                                        },
                                    },
                                },
                            ]
                        },
                        "counts",
                    ),
                    "400": _error("a bad query parameter", "invalid_body"),
                    **refused,
                    "403": _error("Origin not allowed", "forbidden"),
                },
            },
            "options": {
                "summary": "CORS preflight for a fetch-based client sending a header",
                "responses": {"204": {"description": "the allowed origin, methods, headers"}},
            },
        },
        "/schema": {
            "get": {
                "summary": "The event types in force, as JSON Schemas",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["strict", "types"],
                            "properties": {
                                "strict": {"type": "boolean"},
                                "types": {"type": "object"},
                            },
                        },
                        "types",
                    )
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
        "/sse": {
            "get": {
                "summary": "Subscribe with Server-Sent Events",
                "description": (
                    "Each event as `id: <id>` and `data: <Message JSON>` "
                    "(`#/components/schemas/Message`); heartbeats as comments. "
                    "Resume with Last-Event-ID or since."
                ),
                "security": subscriber_auth,
                "parameters": [
                    *filters,
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "the stream: one `data:` record per Message",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "400": _error("a bad query parameter", "invalid_body"),
                    **refused,
                    "403": _error("Origin not allowed", "forbidden"),
                    "429": _error("too many connection attempts", "too_many_requests"),
                    "503": _error("subscribing off, or full", "unavailable", headers=RETRY_AFTER),
                },
            },
            "options": {
                "summary": "CORS preflight for a fetch-based SSE client",
                "responses": {"204": {"description": "the allowed origin, methods, headers"}},
            },
        },
        "/ws": {
            "get": {
                "summary": "Subscribe over WebSocket (receive-only)",
                "description": (
                    "A WebSocket handshake (RFC 6455). Each text frame is one Message "
                    "(`#/components/schemas/Message`): an event with its id; control messages "
                    "`heartbeat`, `resync` and `readers` have no id. A refused handshake is "
                    "accepted, then closed: 4400 bad parameter, 4401 token, 4403 Origin, "
                    "4429 rate, 1013 full or off. Token: the `bearer.<jwt>` subprotocol "
                    "beside `wsbroadcast`, the wsb_token cookie, or `token=`."
                ),
                "security": subscriber_auth,
                "parameters": [
                    *filters,
                    {
                        "name": "Upgrade",
                        "in": "header",
                        "required": True,
                        "schema": {"const": "websocket"},
                    },
                ],
                "responses": {
                    "101": {"description": "switching to the WebSocket protocol; then Messages"}
                },
            }
        },
    }


def _query(name: str, description: str, schema: Schema | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _status() -> Schema:
    return {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
