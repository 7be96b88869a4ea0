"""Logging: uvicorn's formatters with every secret hidden, client text cut short.

Redaction runs on the event loop for every line, on text a client chose (a query string,
a header, a traceback quoting one), so it must be linear in the text: one regex whose
every alternative starts with a literal and whose runs are possessive, never an open
run before a literal (`[a-z_]*token=` took 63 s on 64,000 letters).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from uvicorn.logging import AccessFormatter, DefaultFormatter

from .settings import Settings

REDACTED = "[redacted]"
CLIP = 300  # characters of any one argument of a log line: client text is cut there
# uvicorn's and websockets' lines about each handshake: they hold the query string.
HANDSHAKE_LINES = frozenset(
    {
        '%s - "WebSocket %s" [accepted]',
        '%s - "WebSocket %s" 403',
        '%s - "WebSocket %s" %d',
        "connection open",
        "connection rejected (%d %s)",
    }
)


def _spelled(word: str) -> str:
    """`word` as a pattern that also matches it percent-encoded, letter by letter.

    Starlette decodes the query before looking for `token`, so `%74oken=` is a token too.
    """
    letters = []
    for char in word:
        forms = {re.escape(char)} | {f"%{ord(c):02x}" for c in {char.lower(), char.upper()}}
        letters.append("(?:" + "|".join(sorted(forms)) + ")")
    return "".join(letters)


# A value runs to the next separator; a quoted cookie value to its closing quote.
_VALUE = r"""(?:"[^"\s]*+"?|[^&\s"',;]*+)"""
SECRET_IN_TEXT = re.compile(
    # `token=` (query, cookie; `wsb_token=` too): the name is kept, the value hidden.
    rf"(?P<keep>{_spelled('token=')}"
    # `Bearer <credential>` (a header) or `bearer.<jwt>` (a subprotocol), a few spaces allowed.
    rf"|{_spelled('bearer')}(?:[\s.+]|%20|%2[eE]){{1,8}}){_VALUE}"
    # Anything shaped like a JWT: base64 of `{"`, to the end of the run, dots included.
    rf"|{_spelled('eyJ')}[\w.%-]*+",
    re.IGNORECASE,
)


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` with tokens, bearer credentials, JWTs and the given secrets hidden; O(len)."""
    if secrets:
        for secret in secrets:
            text = text.replace(secret, REDACTED)
    return SECRET_IN_TEXT.sub(lambda m: (m["keep"] or "") + REDACTED, text)


def clip(value: str, limit: int = CLIP) -> str:
    if len(value) <= limit:
        return value
    return f"{value[:limit]}...[{len(value) - limit} more characters]"


class Clip(logging.Filter):
    """Cuts each text argument of a record, keeping the arguments' shape (uvicorn's
    access formatter reads them as a 5-tuple), and drops the handshake lines at `info`:
    they carry the query string, and the README promises no access log at `info`."""

    def __init__(self, verbose: bool = False) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.msg in HANDSHAKE_LINES:
            if not self.verbose:
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        if isinstance(record.msg, str):
            record.msg = clip(record.msg, 4 * CLIP)
        if isinstance(record.args, tuple):
            record.args = tuple(clip(a) if isinstance(a, str) else a for a in record.args)
        return True


class _Redacting(logging.Formatter):
    """Redacts the formatted record: message, arguments, traceback and stack alike."""

    secrets: tuple[str, ...] = ()

    def format(self, record: logging.LogRecord) -> str:
        # The traceback's text is cached on the record, where another handler would
        # read it as is: hide secrets there too.
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return redact(super().format(record), self.secrets)


class RedactingFormatter(_Redacting, DefaultFormatter):
    def __init__(self, *args: Any, secrets: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.secrets = tuple(s for s in secrets if s)


class RedactingAccessFormatter(_Redacting, AccessFormatter):
    def __init__(self, *args: Any, secrets: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.secrets = tuple(s for s in secrets if s)


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's `log_config`: its loggers and ours, through the redacting formatters."""
    level = settings.log_level.upper()
    secrets = [s for s in settings.secrets() if s]
    verbose = settings.log_level in ("debug", "trace")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"clip": {"()": Clip, "verbose": verbose}},
        "formatters": {
            "default": {
                "()": RedactingFormatter,
                "fmt": "%(levelprefix)s %(name)s: %(message)s",
                "use_colors": None,
                "secrets": secrets,
            },
            "access": {
                "()": RedactingAccessFormatter,
                "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
                "secrets": secrets,
            },
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
                "filters": ["clip"],
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "stream": "ext://sys.stdout",
                "filters": ["clip"],
            },
        },
        # Everything else (asyncio, redis, ...) through the same redaction, not Python's
        # last-resort handler, which would print a traceback as it is.
        "root": {"handlers": ["default"], "level": "WARNING"},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
            "wsbroadcast": {"handlers": ["default"], "level": level, "propagate": False},
        },
    }
