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

from starlette.config import Config

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
LOG_LEVELS: tuple[LogLevel, ...] = ("critical", "error", "warning", "info", "debug", "trace")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class SettingsError(ValueError):
    """A setting that cannot be used; the message is one line naming it."""


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    broker_url: str = "memory://"
    publish_token: str | None = None
    open_publish: bool = False
    jwt_secret: str | None = None
    allowed_origins: tuple[str, ...] = ("http://localhost:3000", "http://127.0.0.1:3000")
    history_size: int = 1000
    client_buffer: int = 256
    max_connections: int = 10000
    connect_rate: float = 20.0
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)
    max_body_bytes: int = 65536
    heartbeat_seconds: float = 25.0
    strict_types: bool = True
    event_types: str | None = None  # a path; the file is checked as it is parsed
    log_level: LogLevel = "info"
    websocket_enabled: bool = True

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a log line."""
        return tuple(s for s in (self.publish_token, self.jwt_secret) if s)


def env_names() -> dict[str, str]:
    """Each field's environment variable: its name in upper case behind `WSB_`."""
    names = {f.name: f"WSB_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    names["websocket_enabled"] = "WEBSOCKET_ENABLED"  # the seed's name, kept for its users
    return names


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


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


PARSERS: dict[str, Callable[[str], Any]] = {
    "host": _text,
    "port": _port,
    "broker_url": _broker_url,
    "publish_token": _secret,
    "open_publish": _bool,
    "jwt_secret": _secret,
    "allowed_origins": _origins,
    "history_size": _count,
    "client_buffer": _count,
    "max_connections": _count,
    "connect_rate": _positive,
    "forwarded_allow_ips": _ips,
    "max_body_bytes": _count,
    "heartbeat_seconds": _seconds,
    "strict_types": _bool,
    "event_types": _event_types,
    "log_level": _log_level,
    "websocket_enabled": _bool,
}
SECRET_FIELDS = frozenset({"publish_token", "jwt_secret"})


def _parse(field: str, raw: str, source: str) -> Any:
    try:
        return PARSERS[field](raw)
    except ValueError as exc:
        shown = "(hidden)" if field in SECRET_FIELDS else repr(raw)
        raise SettingsError(f"{source}: {shown} {exc}") from None


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsbroadcast",
        description="Real-time push sidecar: POST /events in, WebSocket and SSE out.",
        epilog="Each flag is also an environment variable (see the README); flags win.",
    )
    names = env_names()
    for field in PARSERS:
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
