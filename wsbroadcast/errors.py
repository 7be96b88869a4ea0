"""The contract's errors: one exception per HTTP error row, and the WebSocket close codes."""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down: reconnect elsewhere with `since`
    TOO_BIG = 1009  # a client message over 4 KiB
    TOO_SLOW = 1013  # too slow, at the connection limit, or subscribing is off
    BAD_REQUEST = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    TOO_MANY = 4429


class ServiceError(Exception):
    """An HTTP refusal rendered as `{"error": code, "detail": detail}`."""

    status = 500
    code = "internal"

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class InvalidJSON(ServiceError):
    status, code = 400, "invalid_json"


class InvalidBody(ServiceError):
    status, code = 400, "invalid_body"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, {"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class TooLarge(ServiceError):
    status, code = 413, "too_large"

    def __init__(self, detail: str) -> None:
        # Close the connection: the rest of the body is never read.
        super().__init__(detail, {"Connection": "close"})


class NotFound(ServiceError):
    status, code = 404, "not_found"


class MethodNotAllowed(ServiceError):
    status, code = 405, "method_not_allowed"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class InvalidEvent(ServiceError):
    status, code = 422, "invalid_event"


class TooManyRequests(ServiceError):
    status, code = 429, "too_many_requests"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail, {"Retry-After": str(retry_after)})


class Unavailable(ServiceError):
    status, code = 503, "unavailable"

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail, {"Retry-After": str(retry_after)})


class Refused(Exception):
    """A subscription refused: `/ws` closes with `code`, `/sse` answers `http_error`."""

    def __init__(self, code: CloseCode, reason: str, http_error: ServiceError) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.http_error = http_error

    @property
    def close_reason(self) -> str:
        """The reason cut to what a close frame holds: 123 bytes of UTF-8 (RFC 6455 5.5)."""
        return self.reason.encode()[:123].decode(errors="ignore")
