from __future__ import annotations

import pytest

from tests.conftest import Service, blog, receive

pytestmark = pytest.mark.anyio


async def test_an_event_posted_reaches_a_subscriber(service: Service) -> None:
    async with service.subscribe() as ws:
        [event_id] = await service.publish(blog())
        message = await receive(ws)
    assert message["id"] == event_id
    assert message["data"] == {"post_id": "p1", "action": "created"}
