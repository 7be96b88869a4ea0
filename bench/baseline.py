"""The seed's design, the benchmark's baseline peer: FastAPI, one ConnectionManager, sends in turn.

`broadcast()` encodes once with `json.dumps`, then awaits `send_text()` for each connection in
turn, as the seed does; `POST /events` calls it. FastAPI is a benchmark dependency only.
Run: `python bench/baseline.py --port 8001`, served by uvicorn with the service's own settings.
"""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

# The service's uvicorn settings, used until `wsbroadcast.cli.uvicorn_options()` exists.
FALLBACK_UVICORN_OPTIONS: dict[str, Any] = {
    "ws": "websockets-sansio",
    "ws_per_message_deflate": False,
    "ws_max_size": 4096,
    "http": "httptools",
    "loop": "uvloop",
    "lifespan": "on",
}


def uvicorn_options() -> tuple[dict[str, Any], str]:
    """The uvicorn kwargs the service runs with, and where they came from."""
    try:
        from wsbroadcast.cli import uvicorn_options as service_options  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return dict(FALLBACK_UVICORN_OPTIONS), "bench fallback"
    opts = dict(service_options())
    for key in ("app", "host", "port", "log_level", "fd", "uds", "reload", "workers"):
        opts.pop(key, None)
    return opts, "wsbroadcast.cli.uvicorn_options()"


class ConnectionManager:
    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        if websocket in self.active_connections:
            self.active_connections.remove(websocket)

    async def broadcast(self, message: dict[str, Any]) -> None:
        message_str = json.dumps(message)
        # A copy, so a disconnect during the loop does not skip anyone.
        for connection in list(self.active_connections):
            try:
                await connection.send_text(message_str)
            except Exception:
                self.disconnect(connection)


class EventIn(BaseModel):
    type: str
    data: dict[str, Any]


manager = ConnectionManager()
app = FastAPI(title="seed design (benchmark baseline)")


@app.websocket("/ws")
@app.websocket("/api/v1/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    await manager.connect(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        manager.disconnect(websocket)


@app.post("/events", status_code=202)
@app.post("/api/v1/events", status_code=202)
async def publish(body: EventIn | list[EventIn]) -> dict[str, list[str]]:
    events = body if isinstance(body, list) else [body]
    ids: list[str] = []
    for event in events:
        event_id = str(uuid.uuid4())
        message: dict[str, Any] = {
            "id": event_id,
            "type": event.type,
            "data": event.data,
            "timestamp": datetime.now(UTC).isoformat(),
        }
        await manager.broadcast(message)
        ids.append(event_id)
    return {"ids": ids}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    opts, _ = uvicorn_options()
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, **opts)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
