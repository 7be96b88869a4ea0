"""Settings: flags over the environment over `.env` over defaults; bad ones stop with exit 2."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from wsbroadcast.settings import Settings, SettingsError, env_names, load_settings


def test_every_setting_of_the_contract_has_its_variable() -> None:
    # The service's own settings (documented in the README) come beside these.
    assert set(env_names().values()) >= {
        "WSB_HOST",
        "WSB_PORT",
        "WSB_BROKER_URL",
        "WSB_PUBLISH_TOKEN",
        "WSB_OPEN_PUBLISH",
        "WSB_JWT_SECRET",
        "WSB_ALLOWED_ORIGINS",
        "WSB_HISTORY_SIZE",
        "WSB_CLIENT_BUFFER",
        "WSB_MAX_CONNECTIONS",
        "WSB_CONNECT_RATE",
        "WSB_FORWARDED_ALLOW_IPS",
        "WSB_MAX_BODY_BYTES",
        "WSB_HEARTBEAT_SECONDS",
        "WSB_STRICT_TYPES",
        "WSB_OUTBOX_URL",
        "WSB_EVENT_TYPES",
        "WSB_LOG_LEVEL",
        "WEBSOCKET_ENABLED",
    }


def test_defaults_are_the_contracts() -> None:
    settings = load_settings([], environ={}, env_file=None)
    assert settings == Settings()
    assert (settings.host, settings.port, settings.broker_url) == ("127.0.0.1", 8000, "memory://")
    assert settings.allowed_origins == ("http://localhost:3000", "http://127.0.0.1:3000")
    assert (settings.history_size, settings.client_buffer, settings.max_connections) == (
        1000,
        256,
        10000,
    )
    assert (settings.connect_rate, settings.max_body_bytes, settings.heartbeat_seconds) == (
        20,
        65536,
        25,
    )
    assert settings.strict_types and settings.websocket_enabled and not settings.open_publish


def test_flags_win_over_the_environment_which_wins_over_dotenv(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("WSB_PORT=7001\nWSB_HISTORY_SIZE=50\nWSB_CLIENT_BUFFER=9\n")
    environ = {"WSB_PORT": "7002", "WSB_HISTORY_SIZE": "60"}
    settings = load_settings(["--port", "7003"], environ=environ, env_file=str(dotenv))
    assert (settings.port, settings.history_size, settings.client_buffer) == (7003, 60, 9)


def test_lists_and_switches_parse() -> None:
    settings = load_settings(
        [
            "--allowed-origins",
            "https://a.example, https://b.example:8443/",
            "--strict-types",
            "false",
        ],
        environ={"WEBSOCKET_ENABLED": "false", "WSB_FORWARDED_ALLOW_IPS": "10.0.0.0/8,::1"},
        env_file=None,
    )
    assert settings.allowed_origins == ("https://a.example", "https://b.example:8443")
    assert settings.forwarded_allow_ips == ("10.0.0.0/8", "::1")
    assert not settings.strict_types and not settings.websocket_enabled


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"WSB_PORT": "abc"}, "WSB_PORT: 'abc' is not a port number"),
        ({"WSB_PORT": "70000"}, "WSB_PORT: '70000' is not a port number"),
        ({"WSB_BROKER_URL": "kafka://x"}, "WSB_BROKER_URL: 'kafka://x' is not a broker URL"),
        ({"WSB_HISTORY_SIZE": "0"}, "WSB_HISTORY_SIZE: '0' is not a whole number"),
        ({"WSB_STRICT_TYPES": "maybe"}, "WSB_STRICT_TYPES: 'maybe' is not true or false"),
        (
            {"WSB_ALLOWED_ORIGINS": "blog.example"},
            "WSB_ALLOWED_ORIGINS: 'blog.example' is not a comma list of origins",
        ),
        ({"WSB_CONNECT_RATE": "-1"}, "WSB_CONNECT_RATE: '-1' must be a number above 0"),
        ({"WSB_LOG_LEVEL": "loud"}, "WSB_LOG_LEVEL: 'loud' is not one of"),
        ({"WSB_HOST": "0.0.0.0"}, "WSB_PUBLISH_TOKEN: not set, and WSB_HOST '0.0.0.0'"),
    ],
    ids=[
        "port-word",
        "port-range",
        "broker",
        "history",
        "bool",
        "origin",
        "rate",
        "level",
        "open-on-all-addresses",
    ],
)
def test_a_bad_setting_names_itself(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match="^" + message.replace("(", r"\(")):
        load_settings([], environ=environ, env_file=None)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_hosts_may_publish_without_a_token(host: str) -> None:
    assert load_settings([], environ={"WSB_HOST": host}, env_file=None).host == host


def test_open_publishing_must_be_declared_on_other_addresses() -> None:
    declared = load_settings(
        ["--host", "0.0.0.0", "--open-publish", "true"], environ={}, env_file=None
    )
    tokened = load_settings(
        [], environ={"WSB_HOST": "0.0.0.0", "WSB_PUBLISH_TOKEN": "t"}, env_file=None
    )
    assert declared.open_publish and tokened.publish_token == "t"


def test_a_secret_never_appears_in_a_settings_error() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings([], environ={"WSB_PORT": "x", "WSB_JWT_SECRET": "s3cr3t"}, env_file=None)
    assert "s3cr3t" not in str(error.value)
    assert "s3cr3t" not in repr(dataclasses.replace(Settings(), jwt_secret=None))


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (["--port", "abc"], {}, "wsbroadcast: --port: 'abc' is not a port number"),
        ([], {"WSB_BROKER_URL": "kafka://x"}, "wsbroadcast: WSB_BROKER_URL: 'kafka://x' is not"),
        (["--host", "0.0.0.0"], {}, "wsbroadcast: WSB_PUBLISH_TOKEN: not set"),
    ],
    ids=["flag", "environment", "open-on-all-addresses"],
)
def test_the_command_stops_with_one_line_and_status_2(
    args: list[str], env: dict[str, str], line: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsbroadcast", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(line)
    assert result.stderr.count("\n") == 1
