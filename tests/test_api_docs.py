"""`GET /schema` and `GET /openapi.json` on a real server, the document checked by a real
OpenAPI validator and by schemathesis' property-based run against the service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from openapi_spec_validator import validate

from tests.conftest import FACTOR, Start, free_port, receive, spawned
from wsbroadcast.openapi import served
from wsbroadcast.schemas import BUILTIN_SCHEMAS

pytestmark = pytest.mark.anyio

LIKES = {
    "type": "object",
    "required": ["post_id", "likes"],
    "properties": {
        "post_id": {"type": "string", "minLength": 1},
        "likes": {"type": "integer", "minimum": 0},
        "voters": {"type": "array", "items": {"$ref": "#/$defs/voter"}},
    },
    "$defs": {"voter": {"type": "string"}},
}


@pytest.fixture
def types_file(tmp_path: Path) -> str:
    path = tmp_path / "types.json"
    path.write_bytes(orjson.dumps({"types": {"like_update": LIKES}}))
    return str(path)


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
async def test_schema_answers_every_type_in_force_at_both_prefixes(
    start: Start, types_file: str, prefix: str
) -> None:
    async with start(event_types=types_file, strict_types=False) as svc:
        response = await svc.http.get(f"{prefix}/schema")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {
            "strict": False,
            "types": {**BUILTIN_SCHEMAS, "like_update": LIKES},
        }
        # And the types it names are the ones the service checks.
        bad = {"type": "like_update", "data": {"post_id": "p1", "likes": "x"}}
        refused = await svc.http.post(f"{prefix}/events", json=[bad])
        assert refused.status_code == 422
        assert refused.json()["detail"] == "events[0].data.likes: must be an integer"
        good = {"type": "like_update", "data": {"post_id": "p1", "likes": 2}}
        assert len(await svc.publish(good)) == 1


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
@pytest.mark.parametrize("strict", [True, False], ids=["strict", "open"])
async def test_openapi_is_a_valid_3_1_document_of_every_route_served(
    start: Start, types_file: str, prefix: str, strict: bool
) -> None:
    async with start(event_types=types_file, strict_types=strict, publish_token="t0ken") as svc:
        response = await svc.http.get(f"{prefix}/openapi.json")
        assert response.status_code == 200
        document: dict[str, Any] = response.json()
        validate(document)  # raises on any error
        assert document["openapi"] == "3.1.0"
        paths = document["paths"]
        for path, method in served(svc.app.routes):
            verb = "get" if method == "websocket" else method
            assert verb in paths.get(path, {}), f"{method.upper()} {path} is not in the document"
        publish = paths["/events"]["post"]
        assert publish["security"] == [{"publishToken": []}]
        assert set(publish["responses"]) >= {"202", "400", "401", "413", "415", "422", "503"}
        schemas = document["components"]["schemas"]
        kinds = [ref["$ref"].rsplit("/", 1)[1] for ref in schemas["Event"]["oneOf"]]
        expected = ["BlogUpdateEvent", "CommentUpdateEvent", "SystemNotificationEvent"]
        assert kinds[:4] == [*expected, "LikeUpdateEvent"]
        assert ("OtherEvent" in kinds) is not strict
        assert schemas["LikeUpdateEvent"]["properties"]["type"] == {"const": "like_update"}
        # A type's own references now point into the document.
        voters = schemas["LikeUpdateData"]["properties"]["voters"]
        assert voters["items"] == {"$ref": "#/components/schemas/LikeUpdateData/$defs/voter"}


def test_schemathesis_finds_no_500_and_every_response_matches_the_document(
    types_file: str, tmp_path: Path
) -> None:
    """Property-based requests from the document against a real server, bounded in time.

    WebSocket and the endless SSE stream are left out: schemathesis speaks plain HTTP.
    """
    port = free_port()
    with spawned(
        "--port", str(port), "--event-types", types_file, "--connect-rate", "10000"
    ) as server:
        server.wait_ready()
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,"
                "response_headers_conformance,response_schema_conformance",
                "--exclude-path-regex",
                r".*/(ws|sse)$",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "15",
                "--seed",
                "17",
                "--generation-database",
                "none",
                "--workers",
                "1",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=50 * FACTOR,  # about 15 s here; --max-time would fuzz until it ran out
            cwd=tmp_path,  # its report folder lands here, not in the repository
            env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
        )
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert "No issues found" in run.stdout
        server.terminate()


async def test_a_custom_types_post_id_filters_like_a_built_ins(
    start: Start, types_file: str
) -> None:
    async with (
        start(event_types=types_file) as svc,
        svc.subscribe(post_id="p1", types="like_update") as ws,
    ):
        await svc.publish([
            {"type": "like_update", "data": {"post_id": "p2", "likes": 1}},
            {"type": "like_update", "data": {"post_id": "p1", "likes": 5, "voters": ["ann"]}},
        ])  # fmt: skip
        event = await receive(ws)
    assert event["type"] == "like_update"
    assert event["data"] == {"post_id": "p1", "likes": 5, "voters": ["ann"]}
