"""The Docker files, checked without a Docker engine (issue 7).

The service image's ENTRYPOINT and HEALTHCHECK run here as written, with the image's ENV; the
compose file is checked against the Compose Specification and the service's own settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest
import yaml
from anyio.abc import Process
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from websockets.asyncio.client import connect

from tests.conftest import close_code, free_port, notice, receive, within
from wsbroadcast.settings import env_names, load_settings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: wsbroadcast, hadolint, check-jsonschema
TOKEN = "deploy-test-token"
SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/env"}


# -- reading the files --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    args: str


def stages(dockerfile: Path) -> list[list[Instruction]]:
    """The Dockerfile's stages, each its instructions from FROM on, continuations joined."""
    found: list[list[Instruction]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, inside a continued instruction too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            found.append([])
        found[-1].append(Instruction(keyword.upper(), args.strip()))
    return found


def args_of(stage: list[Instruction], keyword: str) -> list[str]:
    return [i.args for i in stage if i.keyword == keyword]


def exec_form(args: str) -> list[str]:
    """A JSON exec-form argument list; the shell form (a shell in between) fails the test."""
    try:
        argv = json.loads(args)
    except json.JSONDecodeError:
        pytest.fail(f"not in exec form (JSON list): {args}")
    assert isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv), args
    return argv


def command(stage: list[Instruction]) -> list[str]:
    """What the container runs: ENTRYPOINT then CMD (setting ENTRYPOINT resets the base's CMD)."""
    entrypoint = [exec_form(a) for a in args_of(stage, "ENTRYPOINT")]
    cmd = [exec_form(a) for a in args_of(stage, "CMD")]
    return (entrypoint[-1] if entrypoint else []) + (cmd[-1] if cmd else [])


def healthcheck(stage: list[Instruction]) -> list[str]:
    [args] = args_of(stage, "HEALTHCHECK")
    match = re.fullmatch(r"(?:--[a-z-]+=\S+\s+)*CMD\s+(.+)", args)
    assert match, f"HEALTHCHECK {args}"
    return exec_form(match[1])


def image_env(stage: list[Instruction], base: Mapping[str, str]) -> dict[str, str]:
    """`base` with the stage's ENV applied, `$NAME` expanded as Docker does."""
    env = dict(base)
    for args in args_of(stage, "ENV"):
        for item in shlex.split(args):
            name, sep, value = item.partition("=")
            assert sep, f"ENV {args}: use the name=value form"
            env[name] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m[1], ""), value)
    return env


SERVICE = stages(ROOT / "Dockerfile")
WEB = stages(ROOT / "web" / "Dockerfile")
IMAGE_ENV = image_env(SERVICE[-1], {})
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
INSTANCES = {n: s for n, s in SERVICES.items() if s.get("build") in (".", {"context": "."})}


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}`."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match[1], match[2] or "", match[3] or ""
        current = environ.get(name)
        unset = current is None or (op.startswith(":") and current == "")
        if unset and op.endswith("?"):
            raise LookupError(f"{name}: {arg}")
        return arg if unset and op.endswith("-") else current or ""

    return re.sub(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", replace, value)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.partition("=")[::2] for item in raw)
    return {name: str(value) for name, value in raw.items()}


def published(service: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) for each `ports` entry."""
    pairs = []
    for entry in service.get("ports", []):
        host, _, container = str(entry).rpartition(":")
        pairs.append((int(host.rpartition(":")[2]), int(container)))
    return pairs


# -- the image's command, run here ---------------------------------------------------------


def container_env(**extra: str) -> dict[str, str]:
    """This machine's environment less any WSB setting, the venv first on PATH, then the ENV."""
    names = set(env_names().values())
    base = {k: v for k, v in os.environ.items() if k not in names}
    base["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return image_env(SERVICE[-1], base) | extra


@contextlib.asynccontextmanager
async def running(argv: list[str], env: dict[str, str], cwd: Path) -> AsyncIterator[Process]:
    """Start argv in an empty folder (like the image's WORKDIR); kill it if the test fails."""
    with (cwd / "output.log").open("wb") as log:
        async with await anyio.open_process(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        ) as process:
            try:
                yield process
            finally:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()


async def output(cwd: Path) -> str:
    return await anyio.Path(cwd / "output.log").read_text()


async def wait_healthy(client: httpx.AsyncClient, process: Process, cwd: Path) -> httpx.Response:
    with within(20):
        while process.returncode is None:
            with contextlib.suppress(httpx.TransportError):
                response = await client.get("/healthz")
                if response.status_code == 200:
                    return response
            await anyio.sleep(0.05)  # the interval between polls; the bound is within()'s
    pytest.fail(f"exited with {process.returncode}: {await output(cwd)}")


@pytest.mark.anyio
async def test_image_command_serves_a_healthy_service_that_drains_with_1001_on_sigterm(
    tmp_path: Path,
) -> None:
    argv, check = command(SERVICE[-1]), healthcheck(SERVICE[-1])
    assert argv[0] not in SHELLS and args_of(SERVICE[-1], "STOPSIGNAL") in ([], ["SIGTERM"])
    port = free_port()
    env = container_env(WSB_PORT=str(port), WSB_PUBLISH_TOKEN=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        running(argv, env, tmp_path) as process,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        health = await wait_healthy(client, process, tmp_path)
        assert health.json() == {"status": "ok"}
        assert (await anyio.run_process(check, env=env, check=False)).returncode == 0
        head = (await client.get("/events/head")).json()["id"]
        async with connect(f"ws://127.0.0.1:{port}/ws?since={head}") as ws:
            response = await client.post("/events", json=notice(), headers=auth)
            assert response.status_code == 202, response.text
            assert (await receive(ws))["id"] == response.json()["ids"][0]
            process.send_signal(signal.SIGTERM)
            with within(5):
                code = await close_code(ws)
                returncode = await process.wait()
    assert code == 1001
    assert returncode == 0, await output(tmp_path)
    assert (await anyio.run_process(check, env=env, check=False)).returncode != 0


@pytest.mark.anyio
async def test_image_command_refuses_to_start_without_a_publish_token(tmp_path: Path) -> None:
    env = container_env(WSB_PORT=str(free_port()))
    async with running(command(SERVICE[-1]), env, tmp_path) as process:
        with within(20):
            returncode = await process.wait()
    printed = await output(tmp_path)
    assert returncode == 2 and "WSB_PUBLISH_TOKEN" in printed, printed


# -- the service image --------------------------------------------------------------------


def test_service_image_is_multi_stage_non_root_and_installs_dependencies_before_the_source() -> (
    None
):
    assert len(SERVICE) >= 2
    [builder] = [
        s for s in SERVICE if any(a.startswith("wsbroadcast ") for a in args_of(s, "COPY"))
    ]
    steps = [f"{i.keyword} {i.args}" for i in builder]
    install_deps = next(n for n, s in enumerate(steps) if "pip install -r" in s)
    copy_source = steps.index("COPY wsbroadcast ./wsbroadcast")
    assert install_deps < copy_source
    assert [s for s in steps[:install_deps] if s.startswith("COPY")] == ["COPY pyproject.toml ./"]
    [user] = args_of(SERVICE[-1], "USER")
    assert user.partition(":")[0] not in ("0", "root"), user
    assert IMAGE_ENV["WSB_HOST"] == "0.0.0.0"
    assert args_of(SERVICE[-1], "EXPOSE") == [IMAGE_ENV["WSB_PORT"]] == ["8000"]
    assert "/healthz" in " ".join(healthcheck(SERVICE[-1]))


def test_dependency_layer_installs_what_the_package_declares(tmp_path: Path) -> None:
    [run] = [a for a in args_of(SERVICE[0], "RUN") if "tomllib" in a]
    words = shlex.split(run)
    program = words[words.index("-c") + 1]
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    listed = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split("\n")

    def names(requirements: list[str]) -> set[str]:
        parsed = [Requirement(r) for r in requirements if r.strip()]
        return {
            canonicalize_name(r.name)
            for r in parsed
            if r.marker is None or r.marker.evaluate({"extra": "redis"})
        }

    declared = names(metadata.requires("wsbroadcast") or [])
    assert "redis" in declared and declared <= names(listed), declared - names(listed)
    assert "setuptools" in names(listed)  # the build backend, for --no-build-isolation


# -- compose ------------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    result = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_sets_only_settings_the_service_knows_and_they_load() -> None:
    known = set(env_names().values())
    assert {n for n in IMAGE_ENV if n.startswith("WSB_")} <= known
    assert INSTANCES
    for name, service in INSTANCES.items():
        env = environment(service)
        assert set(env) <= known, f"{name}: {set(env) - known}"
        values = {k: interpolate(v, {"WSB_PUBLISH_TOKEN": TOKEN}) for k, v in env.items()}
        settings = load_settings((), environ=IMAGE_ENV | values, env_file=None)
        assert settings.broker_url == "redis://redis:6379/0"
        assert settings.websocket_enabled is True and settings.publish_token == TOKEN
        assert (settings.host, settings.port) == ("0.0.0.0", 8000)


def test_compose_runs_two_instances_on_redis_with_the_token_from_the_environment() -> None:
    assert len(INSTANCES) == 2
    host_ports = []
    for service in INSTANCES.values():
        env = environment(service)
        with pytest.raises(LookupError, match="WSB_PUBLISH_TOKEN"):
            interpolate(env["WSB_PUBLISH_TOKEN"], {})  # no default token: compose stops
        assert env["WEBSOCKET_ENABLED"] == "true"
        broker = urlsplit(env["WSB_BROKER_URL"])
        assert str(SERVICES[broker.hostname or ""]["image"]).startswith("redis:")
        assert "redis" in service["depends_on"]
        [(host, container)] = published(service)
        assert container == int(IMAGE_ENV["WSB_PORT"])
        host_ports.append(host)
    assert sorted(host_ports) == [8000, 8001]


def test_compose_starts_each_service_once_what_it_depends_on_is_healthy() -> None:
    images = {".": SERVICE[-1], "./web": WEB[-1]}
    for name, service in SERVICES.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}"
            target = SERVICES[dependency]
            build = target.get("build") or ""
            context = build if isinstance(build, str) else build["context"]
            has_check = "healthcheck" in target or args_of(images.get(context, []), "HEALTHCHECK")
            assert has_check and not target.get("healthcheck", {}).get("disable"), dependency
    assert set(SERVICES["web"]["depends_on"]) == set(INSTANCES)


def test_web_sends_browsers_to_a_published_instance_and_itself_to_one_inside() -> None:
    web = SERVICES["web"]
    assert web["build"] == "./web"
    env = {k: interpolate(v, {}) for k, v in environment(web).items()}
    browser = urlsplit(env["NEXT_PUBLIC_WS_URL"])  # from the host: a published port
    instance_ports = {host for s in INSTANCES.values() for host, _ in published(s)}
    assert browser.scheme == "ws" and browser.path in ("/ws", "/api/v1/ws")
    assert (browser.hostname, browser.port) in {("localhost", p) for p in instance_ports}
    server = urlsplit(env["WSB_HTTP_URL"])  # from the web container: the compose network
    assert server.hostname in INSTANCES and server.port == int(IMAGE_ENV["WSB_PORT"])


# -- the web image, build contexts, hadolint -----------------------------------------------


def test_web_image_runs_the_standalone_server_as_non_root() -> None:
    config = next((ROOT / "web").glob("next.config.*")).read_text()
    assert re.search(r"output:\s*['\"]standalone['\"]", config)
    final = WEB[-1]
    assert any(".next/standalone" in a for a in args_of(final, "COPY"))
    assert command(final) == ["node", "server.js"]
    [user] = args_of(final, "USER")
    assert user.partition(":")[0] not in ("0", "root"), user
    assert image_env(final, {})["HOSTNAME"] == "0.0.0.0"
    assert healthcheck(final)[0] == "node"


WILDCARDS = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore: the last pattern matching the path or a folder above it decides."""
    decision = False
    parts = path.split("/")
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        regex = "".join(
            WILDCARDS.get(token, re.escape(token))
            for token in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", pattern)
        )
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            decision = not negated
    return decision


@pytest.mark.parametrize(
    ("context", "kept", "left_out"),
    [
        pytest.param(ROOT, ["wsbroadcast/settings.py"], [".env", ".git/HEAD", ".venv/x", "web/x",
                     "tests/x", "wsbroadcast/__pycache__/x.pyc"], id="service"),
        pytest.param(ROOT / "web", ["src/app/page.tsx"], [".env.local", "node_modules/x",
                     ".next/x"], id="web"),
    ],
)  # fmt: skip
def test_build_context_holds_what_the_dockerfile_copies_and_leaves_out_the_rest(
    context: Path, kept: list[str], left_out: list[str]
) -> None:
    patterns = [
        line.strip()
        for line in (context / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for stage in stages(context / "Dockerfile"):
        for args in args_of(stage, "COPY"):
            if args.startswith("--from"):
                continue
            for source in shlex.split(args)[:-1]:
                if source != ".":
                    assert (context / source).exists(), source
                    assert not ignored(source.rstrip("/"), patterns), source
    assert not any(ignored(p, patterns) for p in kept)
    assert all(ignored(p, patterns) for p in left_out)


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "web/Dockerfile"])
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    result = subprocess.run(
        [BIN / "hadolint", "--no-color", dockerfile], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stdout, result.stdout + result.stderr
