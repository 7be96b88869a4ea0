"""WS /ws: the envelope, filters, heartbeats, query errors, client messages, pings."""

from __future__ import annotations

import orjson
import pytest
import websockets
from starlette.testclient import TestClient

from tests.conftest import (
    RawClient,
    Service,
    Start,
    blog,
    close_code,
    comment,
    notice,
    receive,
    receive_n,
    within,
)
from wsbroadcast.app import create_app

pytestmark = pytest.mark.anyio


def test_the_seeds_backend_test_passes() -> None:
    app = create_app()
    with TestClient(app) as client, client.websocket_connect("/api/v1/ws") as websocket:
        assert websocket


async def test_types_filter_delivers_only_those_types(service: Service) -> None:
    async with service.subscribe(types="comment_update,system_notification") as ws:
        await service.publish([blog(), comment(), blog(), notice()])
        messages = await receive_n(ws, 2)
    assert [m["type"] for m in messages] == ["comment_update", "system_notification"]


async def test_post_id_filter_keeps_that_post_and_events_without_post_id(
    service: Service,
) -> None:
    async with service.subscribe(post_id="p2") as ws:
        await service.publish([blog("p1"), comment("p2"), blog("p3"), notice("x"), blog("p2")])
        messages = await receive_n(ws, 3)
    assert [(m["type"], m["data"].get("post_id")) for m in messages] == [
        ("comment_update", "p2"),
        ("system_notification", None),
        ("blog_update", "p2"),
    ]


async def test_filters_combine(service: Service) -> None:
    async with service.subscribe(types="blog_update", post_id="p2") as ws:
        await service.publish([comment("p2"), blog("p1"), notice(), blog("p2", "deleted")])
        message = await receive(ws)
        assert (message["type"], message["data"]) == (
            "blog_update",
            {"post_id": "p2", "action": "deleted"},
        )


async def test_a_heartbeat_follows_a_quiet_interval_and_passes_filters(start: Start) -> None:
    async with start(heartbeat_seconds=0.2) as svc, svc.subscribe(types="blog_update") as ws:
        with within(5):
            message = orjson.loads(await ws.recv())
        assert set(message) == {"type", "data", "timestamp"}
        assert message["type"] == "heartbeat"
        assert message["data"]["interval"] == 0.2
        assert message["data"]["last_id"] == await svc.head()  # before any: where it started
        await svc.publish(blog())
        assert (await receive(ws))["type"] == "blog_update"


@pytest.mark.parametrize(
    "params",
    [{"types": "Not A Type"}, {"types": ","}, {"post_id": ""}, {"since": "x" * 300}],
    ids=["bad-type-name", "empty-types", "empty-post-id", "long-since"],
)
async def test_a_bad_query_parameter_closes_with_4400(
    service: Service, params: dict[str, str]
) -> None:
    async with service.subscribe(**params) as ws:
        assert await close_code(ws) == 4400


async def test_messages_from_the_client_are_read_and_ignored(service: Service) -> None:
    async with service.subscribe() as ws:
        await ws.send("hello")
        await ws.send(b"\x00\x01")
        await ws.send("x" * 4096)
        await service.publish(notice())
        assert (await receive(ws))["type"] == "system_notification"


async def test_a_client_message_over_4_kib_closes_with_1009(service: Service) -> None:
    async with service.subscribe() as ws:
        await ws.send("x" * 4097)
        assert await close_code(ws) == 1009
    assert 'wsb_disconnects_total{code="1009"} 1.0' in await service.metrics()


async def test_the_wsbroadcast_subprotocol_is_answered_when_offered(service: Service) -> None:
    async with service.subscribe(subprotocols=["wsbroadcast"]) as ws:
        assert ws.subprotocol == "wsbroadcast"
    async with service.subscribe() as ws:
        assert ws.subprotocol is None


async def test_permessage_deflate_is_never_negotiated(service: Service) -> None:
    async with websockets.connect(service.ws_url()) as ws:  # offers deflate by default
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


async def test_a_peer_that_stops_answering_pings_is_dropped(start: Start) -> None:
    fast_pings = {"ws_ping_interval": 0.2, "ws_ping_timeout": 0.2}
    async with start(server_options=fast_pings) as svc:
        silent = await RawClient.connect(svc.port)  # reads nothing, so answers no ping
        wire = await silent.read_to_end(seconds=10)  # returns once the server drops it
    assert b"\x89" in wire  # a ping went out
    assert b"keepalive ping timeout" in wire


async def test_metrics_count_connections_messages_and_publishes(service: Service) -> None:
    async with service.subscribe() as a, service.subscribe() as b:
        metrics = await service.metrics()
        assert 'wsb_connections{transport="ws"} 2.0' in metrics
        await service.publish([blog(), notice()])
        await receive_n(a, 2)
        await receive_n(b, 2)
        metrics = await service.metrics()
    assert "wsb_events_published_total 2.0" in metrics
    assert "wsb_messages_sent_total 4.0" in metrics
    assert "wsb_publish_seconds_count 1.0" in metrics
    for name in ("wsb_disconnects_total", "wsb_resumes_total"):
        assert f"# TYPE {name} counter" in metrics
