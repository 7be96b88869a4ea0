"""A subscriber too slow to keep up never slows the others; it is closed with 1013 or cut."""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio
import pytest
from websockets.asyncio.client import ClientConnection

from tests.conftest import (
    RawClient,
    Service,
    Start,
    close_frame,
    eventually,
    notice,
    receive_n,
    within,
)

pytestmark = pytest.mark.anyio

BIG = "x" * 16_000  # 300 events of 16 KB: more than a stalled reader's socket buffers hold
BATCHES, PER_BATCH = 6, 50
LIMITS = {"max_body_bytes": 1 << 20, "history_size": 5000, "connect_rate": 1000.0}


def closed_with_1013_or_cut(wire: bytes, expected_events: int) -> bool:
    """The slow reader got less than everything, ending in a 1013 close or a cut."""
    return wire.count(b'"type":"system_notification"') < expected_events and (
        wire.endswith(close_frame(1013)) or close_frame(1013) not in wire
    )


async def publish_while_reading(svc: Service, readers: list[ClientConnection]) -> list[str]:
    """Publish every batch while each healthy reader reads; assert each got every event."""
    got: dict[int, list[str]] = {}

    async def read(index: int, ws: ClientConnection) -> None:
        got[index] = [m["id"] for m in await receive_n(ws, BATCHES * PER_BATCH, seconds=60)]

    ids: list[str] = []
    async with anyio.create_task_group() as tasks:
        for index, ws in enumerate(readers):
            tasks.start_soon(read, index, ws)
        for _ in range(BATCHES):
            ids += await svc.publish([notice(BIG)] * PER_BATCH)
    assert all(got[index] == ids for index in range(len(readers)))
    return ids


# With compression on, frames differ per connection: the healthy subscribers (the websockets
# client asks for it) then get theirs through uvicorn's `send` rather than straight onto
# the transport, and the never-reading one (it asks for none) still gets the direct path.
@pytest.mark.parametrize(
    "compression", [False, True], ids=["frames-written-directly", "frames-through-send"]
)
async def test_a_never_reading_subscriber_is_closed_with_1013_while_50_others_get_everything(
    start: Start, compression: bool
) -> None:
    options = {"ws_per_message_deflate": compression}
    async with (
        start(client_buffer=16, server_options=options, **LIMITS) as svc,
        AsyncExitStack() as stack,
    ):
        deflate = "deflate" if compression else None
        healthy = [
            await stack.enter_async_context(svc.subscribe(compression=deflate)) for _ in range(50)
        ]
        # Otherwise the second case would silently test the direct path again.
        assert all(bool(ws.protocol.extensions) == compression for ws in healthy)
        stalled = await RawClient.connect(svc.port)
        ids = await publish_while_reading(svc, healthy)
        wire = await stalled.read_to_end()
        metrics = await svc.metrics()
    assert closed_with_1013_or_cut(wire, len(ids))
    assert 'wsb_disconnects_total{code="1013"} 1.0' in metrics


async def test_a_write_stalled_for_5_s_closes_the_subscriber(start: Start) -> None:
    # A buffer large enough never to overflow: only the stalled write can close it.
    async with start(client_buffer=100_000, **LIMITS) as svc, svc.subscribe() as healthy:
        stalled = await RawClient.connect(svc.port)
        ids = await publish_while_reading(svc, [healthy])

        async def closed() -> bool:
            return 'wsb_disconnects_total{code="1013"} 1.0' in await svc.metrics()

        await eventually(closed, seconds=15)  # 5 s of stall, then the close or the cut
        assert closed_with_1013_or_cut(await stalled.read_to_end(), len(ids))


async def test_publishing_never_waits_for_a_stalled_subscriber(start: Start) -> None:
    async with start(client_buffer=100_000, **LIMITS) as svc:
        stalled = await RawClient.connect(svc.port)
        with within(10):  # 900 events of 16 KB while one subscriber reads nothing
            for _ in range(3 * BATCHES):
                await svc.publish([notice(BIG)] * PER_BATCH)
        stalled.sock.close()
