"""Reader counts shared through Redis: a hash per instance, summed by every instance.

Each instance keeps its counts in `wsbroadcast:readers:<instance>` (post_id -> readers, and
the field "" -> all its subscribers), refreshed with an expiry of HASH_SECONDS at each
exchange: an instance that dies without a goodbye drops out of every sum that long after.
The set `wsbroadcast:readers:instances` names the hashes; one that expired leaves it.
An exchange is two round trips whatever the number of connects since the last (docs/redis.md).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Mapping

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..errors import Unavailable

logger = logging.getLogger("wsbroadcast.redis")

INSTANCES = "wsbroadcast:readers:instances"
HASH_PREFIX = "wsbroadcast:readers:"
HASH_SECONDS = 10  # a dead instance's counts expire this long after its last exchange
EXCHANGE_SECONDS = 1.5  # one exchange, all in


class RedisCounts:
    """This instance's counts in its own hash; the others' read back and summed."""

    def __init__(self, client: Redis) -> None:
        self._redis = client
        self.instance = secrets.token_hex(8)
        self._key = HASH_PREFIX + self.instance
        self._whole = True  # write every count next time: the hash is new, or was lost

    async def exchange(
        self, changed: Mapping[str, int], local: Mapping[str, int]
    ) -> dict[str, int]:
        try:
            with anyio.fail_after(EXCHANGE_SECONDS):
                return await self._exchange(changed, local)
        except TimeoutError:
            raise Unavailable("Redis did not answer in time") from None
        except (RedisError, OSError) as exc:
            raise Unavailable(f"Redis failed: {exc}") from None

    async def _exchange(
        self, changed: Mapping[str, int], local: Mapping[str, int]
    ) -> dict[str, int]:
        whole, self._whole = self._whole, True  # until this exchange succeeds
        # The field "" is always there: an instance with no subscriber still has a hash.
        kept = {k: v for k, v in (local if whole else changed).items() if v or not k}
        gone = [] if whole else [k for k, v in changed.items() if not v and k]
        expected = sum(1 for k, v in local.items() if v or not k)
        async with self._redis.pipeline(transaction=False) as pipe:
            if whole:
                pipe.delete(self._key)
            if gone:
                pipe.hdel(self._key, *gone)
            if kept:
                pipe.hset(self._key, mapping=kept)  # type: ignore[arg-type]
            pipe.expire(self._key, HASH_SECONDS)
            pipe.sadd(INSTANCES, self.instance)  # after the hash: a member always had one
            pipe.hlen(self._key)
            pipe.smembers(INSTANCES)
            *_, fields, members = await pipe.execute()
        # Fewer fields than counts: the hash was lost (a flush, a restart); write it whole.
        self._whole = fields != expected
        others = [m for m in members if m.decode() != self.instance]
        if not others:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for member in others:
                pipe.hgetall(HASH_PREFIX + member.decode())
            hashes = await pipe.execute()
        summed: dict[str, int] = {}
        dead = []
        for member, counts in zip(others, hashes, strict=True):
            if not counts:  # expired: that instance stopped refreshing it
                dead.append(member)
            for key, value in counts.items():
                name = key.decode()
                summed[name] = summed.get(name, 0) + int(value)
        if dead:
            await self._redis.srem(INSTANCES, *dead)
        return summed

    async def leave(self) -> None:
        with anyio.move_on_after(EXCHANGE_SECONDS, shield=True):
            with contextlib.suppress(RedisError, OSError):
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.delete(self._key)
                    pipe.srem(INSTANCES, self.instance)
                    await pipe.execute()
