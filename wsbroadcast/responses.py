"""JSON responses, and the contract's error body `{"error", "detail"}`."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from .errors import ServiceError


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: ServiceError) -> JSONResponse:
    return JSONResponse(
        {"error": error.code, "detail": error.detail}, error.status, headers=error.headers
    )
