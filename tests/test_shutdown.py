"""SIGTERM: stop accepting, close every subscriber with 1001, finish in-flight publishes,
exit 0 within 5 s, even with a subscriber that never reads."""

from __future__ import annotations

import time

import anyio
import httpx
import pytest
import websockets

from tests.conftest import (
    FACTOR,
    RawClient,
    close_code,
    close_frame,
    free_port,
    notice,
    receive_n,
    spawned,
)

pytestmark = pytest.mark.anyio

BIG = "x" * 16_000


async def test_sigterm_closes_subscribers_with_1001_and_exits_0_within_5_s() -> None:
    port = free_port()
    flags = ["--port", str(port), "--max-body-bytes", "2000000", "--client-buffer", "100000"]
    with spawned(*flags) as process:
        process.wait_ready()
        async with (
            websockets.connect(f"ws://127.0.0.1:{port}/ws") as a,
            websockets.connect(f"ws://127.0.0.1:{port}/api/v1/ws") as b,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
        ):
            stalled = await RawClient.connect(port)  # never reads: its buffers fill
            for _ in range(6):
                response = await http.post("/events", json=[notice(BIG)] * 50)
                assert response.status_code == 202
            for ws in (a, b):  # these two keep up; only `stalled` lags
                assert len(await receive_n(ws, 300, seconds=20)) == 300
            started = time.monotonic()
            status = await anyio.to_thread.run_sync(process.terminate)
            elapsed = time.monotonic() - started
            assert await close_code(a, seconds=10) == 1001
            assert await close_code(b, seconds=10) == 1001
            wire = await stalled.read_to_end()
    assert status == 0
    assert elapsed < 5 * FACTOR
    assert wire.endswith(close_frame(1001)) or close_frame(1001) not in wire  # 1001 or cut


async def test_an_in_flight_publish_finishes_during_shutdown() -> None:
    port = free_port()
    half_sent, go_on = anyio.Event(), anyio.Event()

    async def body() -> object:
        yield b'[{"type": "system_notification", '
        half_sent.set()
        await go_on.wait()
        yield b'"data": {"message": "late", "level": "info"}}]'

    with spawned("--port", str(port)) as process:
        process.wait_ready()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            async with anyio.create_task_group() as tasks:
                result: list[httpx.Response] = []

                async def post() -> None:
                    result.append(
                        await http.post(
                            "/events", content=body(), headers={"content-type": "application/json"}
                        )
                    )

                tasks.start_soon(post)
                await half_sent.wait()
                process.popen.send_signal(15)
                go_on.set()
            status = await anyio.to_thread.run_sync(process.popen.wait, 10)
    assert result[0].status_code == 202
    assert status == 0
