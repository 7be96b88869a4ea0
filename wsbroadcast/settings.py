"""Settings: command-line flags over the environment over `.env` over defaults.

Only this module reads the environment; everything else takes a frozen `Settings`.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from starlette.config import Config

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
LOG_LEVELS: tuple[LogLevel, ...] = ("critical", "error", "warning", "info", "debug", "trace")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class SettingsError(ValueError):
    """A setting that cannot be used; the message is one line naming it."""


# Parsers turn a raw string into a field value or raise ValueError with the reason.
def _port(raw: str) -> int:
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        raise ValueError("is not a port number")
    return int(raw)


def _count(raw: str) -> int:
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError("is not a whole number of at least 1")
    return int(raw)


def _positive(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("is not a number") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a number above 0")
    return value


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise ValueError("must be 0 or more seconds")
    return value


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("is not true or false")


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("is empty")
    return raw.strip()


def _secret(raw: str) -> str | None:
    return raw or None  # an empty value means unset


def _broker_url(raw: str) -> str:
    if raw == "memory://" or raw.startswith(("redis://", "rediss://", "unix://")):
        return raw
    raise ValueError("is not a broker URL (memory:// or redis://host:port/db)")


def _outbox_url(raw: str) -> str | None:
    if not raw:
        return None  # an empty value means unset
    if not raw.startswith(("postgresql://", "postgres://")):
        raise ValueError("is not a postgresql://user:password@host:port/database URL")
    return raw


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    if not origins:
        raise ValueError("lists no origin (use * to allow any)")
    for origin in origins:
        if origin != "*" and "://" not in origin:
            raise ValueError("is not a comma list of origins like https://blog.example, or *")
    return origins


def _ips(raw: str) -> tuple[str, ...]:
    items = tuple(i.strip() for i in raw.split(",") if i.strip())
    for item in items:
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError("is not a comma list of IP addresses or networks") from None
    return items


def _event_types(raw: str) -> str | None:
    if not raw.strip():
        return None
    from .schemas import SchemaFileError, load_file  # jsonschema only when a file is named

    try:
        load_file(raw)
    except SchemaFileError as exc:
        raise ValueError(str(exc)) from None
    return raw


def _log_level(raw: str) -> LogLevel:
    lowered = raw.strip().lower()
    for level in LOG_LEVELS:
        if level == lowered:
            return level
    raise ValueError(f"is not one of {', '.join(LOG_LEVELS)}")


def setting(
    default: Any,
    parse: Callable[[str], Any],
    *,
    secret: bool | Literal["password"] = False,
    env: str = "",
) -> Any:
    """A field with its parser beside it; `env` when its variable is not WSB_<NAME>;
    `secret="password"` for a URL whose password is the secret."""
    return dataclasses.field(
        default=default, metadata={"parse": parse, "secret": secret, "env": env}
    )


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = setting("127.0.0.1", _text)
    port: int = setting(8000, _port)
    broker_url: str = setting("memory://", _broker_url, secret="password")
    publish_token: str | None = setting(None, _secret, secret=True)
    open_publish: bool = setting(False, _bool)
    jwt_secret: str | None = setting(None, _secret, secret=True)
    allowed_origins: tuple[str, ...] = setting(
        ("http://localhost:3000", "http://127.0.0.1:3000"), _origins
    )
    history_size: int = setting(1000, _count)
    history_ttl: float = setting(0.0, _seconds)  # 0: no age limit
    history_bytes: int = setting(64 << 20, _count)
    backlog_bytes: int = setting(32 << 20, _count)
    client_buffer: int = setting(256, _count)
    max_connections: int = setting(10000, _count)
    connect_rate: float = setting(20.0, _positive)
    forwarded_allow_ips: tuple[str, ...] = setting(("127.0.0.1",), _ips)
    max_body_bytes: int = setting(65536, _count)
    heartbeat_seconds: float = setting(25.0, _seconds)
    header_timeout: float = setting(10.0, _positive)
    strict_types: bool = setting(True, _bool)
    event_types: str | None = setting(None, _event_types)  # a path, its file checked here
    # Shown "(hidden)" in errors, and its password kept out of every log line.
    outbox_url: str | None = setting(None, _outbox_url, secret="password")
    log_level: LogLevel = setting("info", _log_level)
    # The seed's name, kept for its users.
    websocket_enabled: bool = setting(True, _bool, env="WEBSOCKET_ENABLED")

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a log line."""
        found: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value and f.metadata["secret"] == "password":
                found += url_passwords(value)
            elif value and f.metadata["secret"]:
                found.append(value)
        return tuple(found)


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def env_names() -> dict[str, str]:
    """Each field's environment variable: its name in upper case behind `WSB_`."""
    return {name: f.metadata["env"] or f"WSB_{name.upper()}" for name, f in FIELDS.items()}


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def url_passwords(url: str) -> tuple[str, ...]:
    """The passwords a URL holds: after `user:`, or as `password=` in its query."""
    parts = urlsplit(url)
    found = parse_qs(parts.query).get("password", [])
    return tuple(p for p in (parts.password, *found) if p)


def _has_password(url: str) -> bool:
    try:
        return bool(url_passwords(url))
    except ValueError:
        return True  # unparseable: show nothing of it


def _parse(field: str, raw: str, source: str) -> Any:
    meta = FIELDS[field].metadata
    try:
        return meta["parse"](raw)
    except ValueError as exc:
        secret = meta["secret"] is True or (meta["secret"] and _has_password(raw))
        shown = "(hidden)" if secret else repr(raw)
        raise SettingsError(f"{source}: {shown} {exc}") from None


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsbroadcast",
        description="Real-time push sidecar: POST /events in, WebSocket and SSE out.",
        epilog="Each flag is also an environment variable (see the README); flags win.",
    )
    names = env_names()
    for field in FIELDS:
        parser.add_argument(flag_name(field), dest=field, metavar="VALUE", help=names[field])
    return parser


def load_settings(
    argv: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    env_file: str | None = ".env",
) -> Settings:
    """Build Settings from flags, then the environment, then `.env`; raise SettingsError."""
    flags = vars(argument_parser().parse_args(list(argv)))
    # starlette's Config reads the environment first, then the file.
    config = Config(
        env_file if env_file and os.path.isfile(env_file) else None,
        environ=os.environ if environ is None else environ,
    )
    values: dict[str, Any] = {}
    for field, env_name in env_names().items():
        if flags.get(field) is not None:
            values[field] = _parse(field, flags[field], flag_name(field))
        else:
            raw = config.get(env_name, default=None)
            if raw is not None:
                values[field] = _parse(field, raw, env_name)
    settings = Settings(**values)
    check(settings)
    return settings


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(settings: Settings) -> None:
    """Refuse combinations that are unsafe or cannot work."""
    if not settings.publish_token and not settings.open_publish and not is_loopback(settings.host):
        raise SettingsError(
            f"WSB_PUBLISH_TOKEN: not set, and WSB_HOST {settings.host!r} is not loopback: "
            "set a publish token, or WSB_OPEN_PUBLISH=true to let anyone publish"
        )
