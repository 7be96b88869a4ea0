"""Logs: no token in any line, tracebacks included; redaction linear; no query at `info`."""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import httpx
import jwt
import pytest
import websockets

from tests.conftest import FACTOR, Process, blog, free_port, spawned, within
from wsbroadcast.logs import (
    Clip,
    RedactingAccessFormatter,
    RedactingFormatter,
    redact,
)

SECRET = "jwt-secret-for-log-tests-0123456789abcdef"
PUBLISH_TOKEN = "pub-token-for-log-tests-5d0c9e1f"


def reader_token() -> str:
    claims = {"sub": "reader-with-a-long-name", "exp": int(time.time()) + 600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def pieces(secret: str, size: int = 20) -> Iterator[str]:
    """Every `size`-character piece of `secret`."""
    for at in range(len(secret) - size + 1):
        yield secret[at : at + size]


def assert_hidden(secret: str, output: str) -> None:
    leaked = [piece for piece in pieces(secret) if piece in output]
    assert not leaked, f"{leaked[0]!r} of the token is in the log"


# --- redaction, pure ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a",  # the run of letters that took minutes before `token=`
        "x_",
        "eyJ",
        "eyJa.",
        "token",
        "bearer",
        "%74ok",
        "bearer. ",
        'token="',
    ],
    ids=[
        "letters",
        "underscores",
        "jwt-starts",
        "jwt-dots",
        "tokens",
        "bearers",
        "percent",
        "bearer-spaces",
        "quoted",
    ],
)
def test_redaction_is_linear_on_a_megabyte_of_adversarial_text(text: str) -> None:
    # Doubling sizes, each under a budget linear in its size: a quadratic redaction
    # fails at a few kilobytes within a second, rather than running for hours.
    for size in (1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20):
        sample = (text * (size // len(text) + 1))[:size]
        started = time.process_time()  # CPU time: other load on the machine counts less
        redact(sample, ("some-secret",))
        elapsed = time.process_time() - started
        assert elapsed < (0.05 + size / (1 << 20)) * FACTOR, f"{elapsed:.2f} s at {size}"


@pytest.mark.parametrize(
    "text",
    [
        "GET /ws?since=x&token={t}&types=a",
        "GET /ws?wsb_token={t}",
        "GET /ws?%74oken={pct}",
        "GET /ws?TOK%45N={pct}",
        "< Cookie: other=1; wsb_token={t}; more=2",
        '< Cookie: wsb_token="{t}"',
        "< Authorization: Bearer {t}",
        "< Sec-WebSocket-Protocol: wsbroadcast, bearer.{t}",
        "invalid Sec-WebSocket-Protocol header: 'wsbroadcast, bearer. {t}'",
        "a bare {t} in a sentence",
    ],
)
def test_every_form_of_a_token_is_redacted(text: str) -> None:
    token = reader_token()
    line = text.format(t=token, pct=urllib.parse.quote(token.replace("e", "%65"), safe="%"))
    clean = redact(line)
    assert "[redacted]" in clean
    assert_hidden(token, clean)


def test_known_secrets_are_redacted_wherever_they_appear() -> None:
    clean = redact(f"x{PUBLISH_TOKEN}y and {SECRET}", (PUBLISH_TOKEN, SECRET))
    assert PUBLISH_TOKEN not in clean and SECRET not in clean


def record(
    msg: str, args: tuple[object, ...], exc: BaseException | None = None
) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, msg, args, exc_info)


def test_a_traceback_and_its_cached_text_are_redacted() -> None:
    token = reader_token()
    try:
        raise ValueError(f"invalid header: 'wsbroadcast, bearer. {token}'")
    except ValueError as exc:
        entry = record("! invalid handshake", (), exc)
    formatter = RedactingFormatter("%(levelprefix)s %(message)s")
    output = formatter.format(entry)
    assert "ValueError" in output
    assert_hidden(token, output)
    assert entry.exc_text is not None and "[redacted]" in entry.exc_text  # what others read


def test_the_access_formatter_keeps_its_five_arguments() -> None:
    token = reader_token()
    args = ("127.0.0.1:5000", "GET", f"/events/head?token={token}", "1.1", 200)
    entry = record('%s - "%s %s HTTP/%s" %d', args)
    assert Clip(verbose=True).filter(entry)
    formatter = RedactingAccessFormatter(
        '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'
    )
    output = formatter.format(entry)
    assert "GET /events/head?token=[redacted]" in output and "200" in output
    assert_hidden(token, output)


def test_client_text_is_cut_before_it_reaches_a_line() -> None:
    entry = record("refused: %s", ("a" * 20_000,))
    assert Clip().filter(entry)
    assert len(entry.getMessage()) < 1000


def test_handshake_lines_are_dropped_at_info_and_kept_at_debug() -> None:
    line = '%s - "WebSocket %s" [accepted]'
    assert not Clip(verbose=False).filter(record(line, ("127.0.0.1:1", "/ws?since=x")))
    kept = record(line, ("127.0.0.1:1", "/ws?since=x"))
    assert Clip(verbose=True).filter(kept) and kept.levelno == logging.DEBUG


# --- against a real server ----------------------------------------------------------


@contextmanager
def served(level: str) -> Iterator[tuple[Process, int]]:
    port = free_port()
    env = {
        "WSB_PUBLISH_TOKEN": PUBLISH_TOKEN,
        "WSB_JWT_SECRET": SECRET,
        "WSB_LOG_LEVEL": level,
        "WSB_PORT": str(port),
    }
    with spawned(env=env) as process:
        process.wait_ready()
        yield process, port


async def handshake(url: str, **options: object) -> None:
    """Open and close a WebSocket; a refused handshake is fine, a hang is not."""
    with within(10):
        try:
            async with websockets.connect(url, open_timeout=10 * FACTOR, **options) as ws:  # type: ignore[arg-type]
                await ws.close()
        except (websockets.InvalidHandshake, websockets.ConnectionClosed, OSError):
            pass


pytestmark = pytest.mark.anyio


async def test_no_way_a_token_arrives_puts_it_in_the_log_at_trace() -> None:
    token = reader_token()
    # The name and the token percent-encoded, as Starlette decodes and accepts them.
    encoded = token.replace("e", "%65").replace(".", "%2E")
    with served("trace") as (process, port):
        url = f"ws://127.0.0.1:{port}/ws"
        await handshake(url, subprotocols=["wsbroadcast", f"bearer.{token}"])
        malformed = {"Sec-WebSocket-Protocol": f"wsbroadcast, bearer. {token}"}  # a space
        await handshake(url, additional_headers=malformed)
        await handshake(url, additional_headers={"Cookie": f"wsb_token={token}"})
        await handshake(url, additional_headers={"Authorization": f"Bearer {token}"})
        await handshake(f"{url}?token={token}")
        await handshake(f"{url}?%74oken={encoded}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for query in (f"token={token}", f"%74oken={encoded}"):
                async with http.stream("GET", f"/sse?{query}") as stream:
                    assert stream.status_code == 200
            bearer = {"Authorization": f"Bearer {token}"}
            async with http.stream("GET", "/sse", headers=bearer) as stream:
                assert stream.status_code == 200
            published = await http.post(
                "/events", json=blog(), headers={"Authorization": f"Bearer {PUBLISH_TOKEN}"}
            )
            assert published.status_code == 202
        assert await anyio.to_thread.run_sync(process.terminate) == 0
    output = process.output
    assert "WebSocket /ws" in output and "InvalidHeader" in output  # all was logged...
    for secret in (token, PUBLISH_TOKEN, SECRET):
        assert_hidden(secret, output)  # ...but no token
    assert "Logging error" not in output


async def test_the_access_log_works_at_debug_with_a_token_in_the_query() -> None:
    token = reader_token()
    with served("debug") as (process, port):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get(f"/events/head?token={token}")).status_code == 200
        assert await anyio.to_thread.run_sync(process.terminate) == 0
    output = process.output
    assert '"GET /events/head?token=[redacted] HTTP/1.1" 200' in output
    assert "Logging error" not in output and "ValueError" not in output
    assert_hidden(token, output)


async def test_long_queries_and_field_names_leave_the_server_responsive() -> None:
    with served("info") as (process, port):
        url = f"ws://127.0.0.1:{port}/ws"
        auth = {"Authorization": f"Bearer {PUBLISH_TOKEN}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            field = {"type": "blog_update", "data": {}, "t" * 16_000: 1}

            async def attack() -> None:
                # Over 8 KiB, websockets refuses the request line before anything is logged.
                await handshake(f"{url}?x=" + "a" * 8_100)
                await handshake(f"{url}?since=" + "a" * 8_100)
                await http.post("/events", json=field, headers=auth)
                await http.get("/sse?x=" + "a" * 64_000)
                await http.get("/sse?since=" + "a" * 64_000)

            done = anyio.Event()

            async def attacks() -> None:
                async with anyio.create_task_group() as inner:
                    for _ in range(5):
                        inner.start_soon(attack)
                done.set()

            slowest = 0.0
            with within(120):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(attacks)
                    while not done.is_set():  # it took minutes when redaction backtracked
                        started = time.perf_counter()
                        assert (await http.get("/healthz")).status_code == 200
                        slowest = max(slowest, time.perf_counter() - started)
            assert slowest < 1.0 * FACTOR
        assert await anyio.to_thread.run_sync(process.terminate) == 0
    output = process.output
    assert "WebSocket /ws" not in output  # no query string at info
    assert "connection open" not in output
    assert max(len(line) for line in output.splitlines()) < 2000
