"""`GET /readers`: live reader counts, with the auth and origin rules of `/sse`.

Not rate-limited as a connection attempt: it opens no subscription, answers from memory,
and a page may poll it (`/sse` and `/ws` count against WSB_CONNECT_RATE).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from . import security
from .errors import InvalidBody, Refused, ServiceError
from .hub import Hub
from .responses import JSONResponse, error_response
from .settings import Settings
from .sse import cors_headers

MAX_TOP = 100
DEFAULT_TOP = 10
MAX_POST_ID = 256


async def readers(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    cors = cors_headers(request.headers.get("origin"), settings)
    if request.method == "OPTIONS":  # preflight for a fetch-based client sending a header
        return Response(
            status_code=204,
            headers={
                **cors,
                "Access-Control-Allow-Methods": "GET",
                "Access-Control-Allow-Headers": "Authorization",
                "Access-Control-Max-Age": "600",
            },
        )
    try:
        body = _counts(request, settings)
    except Refused as refusal:
        error: ServiceError = refusal.http_error
    except ServiceError as refused:
        error = refused
    else:
        # Counts change every second: never cached.
        return JSONResponse(body, headers={**cors, "Cache-Control": "no-store"})
    response = error_response(error)  # with CORS: a browser may read why
    response.headers.update(cors)
    return response


def _counts(request: Request, settings: Settings) -> dict[str, object]:
    security.check_origin(request.headers.get("origin"), settings.allowed_origins)
    query = request.query_params
    credentials = security.Credentials(
        cookie_header=request.headers.get("cookie"),
        query_token=query.get("token"),
        authorization=request.headers.get("authorization"),
    )
    security.verify_subscriber(credentials.token(), settings.jwt_secret)
    hub: Hub = request.app.state.hub
    post_id = query.get("post_id")
    if post_id is not None:
        if not 0 < len(post_id) <= MAX_POST_ID:
            raise InvalidBody(f"post_id: must be 1 to {MAX_POST_ID} characters")
        return {"post_id": post_id, "readers": hub.readers.count(post_id)}
    top = _top(query.get("top"))
    posts = [{"post_id": p, "readers": n} for p, n in hub.readers.top(top)]
    return {"total": hub.readers.total(), "posts": posts}


def _top(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_TOP
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= MAX_TOP):
        raise InvalidBody(f"top: must be a whole number from 1 to {MAX_TOP}")
    return int(raw)
