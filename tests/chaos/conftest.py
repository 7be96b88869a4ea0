"""Fixtures for the chaos scenarios: a redis-server of the test's own, and instances that
are always stopped, whatever the test did."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness import Instance
from tests.conftest import free_port
from tests.redis_server import RedisServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.chaos)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


MakeInstance = Callable[..., Instance]


@pytest.fixture
def instance() -> Iterator[MakeInstance]:
    """`instance("a", url, "--flag", "value", WSB_X="y")`: made now, started by the test."""
    made: list[Instance] = []

    def make(name: str, broker_url: str, *flags: str, **options: Any) -> Instance:
        made.append(Instance(name, broker_url, *flags, **options))
        return made[-1]

    yield make
    for each in made:
        each.stop()
