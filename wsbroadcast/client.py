"""Publish to wsbroadcast from Python: `Publisher` (sync) and `AsyncPublisher`, over httpx.

One idempotency key per call, sent on every try, so a retry never publishes twice.
Importing this loads neither Starlette nor uvicorn: a blog backend needs only httpx.
"""

from __future__ import annotations

import email.utils
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import httpx

__all__ = ["AsyncPublisher", "PublishError", "Publisher"]

Event = Mapping[str, Any]
FIRST_DELAY = 0.1  # seconds before the first retry; doubles up to MAX_DELAY
MAX_DELAY = 5.0


class PublishError(Exception):
    """The service refused the events (a 4xx), or stayed unavailable for `retry_for`.

    `status` is the HTTP status (None when the service was never reached); `error` and
    `detail` are the service's error body (`invalid_event`, `events[3].data.post_id: ...`).
    """

    def __init__(self, status: int | None, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}" if status else f"{error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail


class _Attempts:
    """When to try again: jittered backoff, `Retry-After` honoured, up to `retry_for`."""

    def __init__(self, retry_for: float) -> None:
        self.deadline = time.monotonic() + retry_for
        self.delay = FIRST_DELAY

    def outcome(self, response: httpx.Response) -> list[str] | float:
        """The ids of an accepted publish, or how long to wait before the next try."""
        if response.status_code in (200, 202):
            ids: list[str] = response.json()["ids"]
            return ids
        if response.status_code < 500:
            raise _error(response)
        wait = _retry_after(response.headers.get("retry-after"))
        return self.wait(response, wait)

    def wait(self, failure: httpx.Response | Exception, at_least: float | None = None) -> float:
        """The pause before the next try, or raise when it would end past the deadline."""
        # Jitter: publishers that failed together do not retry together, even when the
        # service told them all the same Retry-After.
        jitter = random.uniform(self.delay / 2, self.delay)
        pause = jitter if at_least is None else at_least + jitter / 2
        self.delay = min(self.delay * 2, MAX_DELAY)
        if time.monotonic() + pause > self.deadline:
            if isinstance(failure, httpx.Response):
                raise _error(failure)
            raise PublishError(None, "unreachable", str(failure) or type(failure).__name__)
        return pause


def _error(response: httpx.Response) -> PublishError:
    try:
        body = response.json()
        return PublishError(response.status_code, str(body["error"]), str(body["detail"]))
    except (ValueError, KeyError, TypeError):
        return PublishError(response.status_code, "http_error", response.text[:200])


def _retry_after(raw: str | None) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date (RFC 9110 10.2.3)."""
    if raw is None:
        return None
    if raw.strip().isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _request(
    url: str, token: str | None, events: Event | Sequence[Event], key: str | None
) -> tuple[str, Any, dict[str, str]]:
    body = dict(events) if isinstance(events, Mapping) else [dict(e) for e in events]
    headers = {"Idempotency-Key": key or uuid.uuid4().hex}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return url.rstrip("/") + "/events", body, headers


RETRIED = (httpx.TransportError,)  # connection refused or reset, timeouts, protocol errors


class Publisher:
    """`Publisher("http://127.0.0.1:8000").publish({"type": ..., "data": {...}})` -> ids."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 5.0,
        retry_for: float = 30.0,
    ) -> None:
        self.url = url
        self.token = token
        self.retry_for = retry_for
        self._http = httpx.Client(timeout=timeout)

    def publish(
        self, events: Event | Sequence[Event], idempotency_key: str | None = None
    ) -> list[str]:
        """Publish one event or a batch; the ids in order. Raises PublishError."""
        url, body, headers = _request(self.url, self.token, events, idempotency_key)
        attempts = _Attempts(self.retry_for)
        while True:
            try:
                outcome = attempts.outcome(self._http.post(url, json=body, headers=headers))
            except RETRIED as exc:
                outcome = attempts.wait(exc)
            if isinstance(outcome, list):
                return outcome
            time.sleep(outcome)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPublisher:
    """`await AsyncPublisher(url).publish(event)`: the same, for asyncio (FastAPI, ...)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 5.0,
        retry_for: float = 30.0,
    ) -> None:
        self.url = url
        self.token = token
        self.retry_for = retry_for
        self._http = httpx.AsyncClient(timeout=timeout)

    async def publish(
        self, events: Event | Sequence[Event], idempotency_key: str | None = None
    ) -> list[str]:
        """Publish one event or a batch; the ids in order. Raises PublishError."""
        url, body, headers = _request(self.url, self.token, events, idempotency_key)
        attempts = _Attempts(self.retry_for)
        while True:
            try:
                outcome = attempts.outcome(await self._http.post(url, json=body, headers=headers))
            except RETRIED as exc:
                outcome = attempts.wait(exc)
            if isinstance(outcome, list):
                return outcome
            await anyio.sleep(outcome)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
