"""The Redis that `make up` runs (or reused) answers steno's client library."""

import pytest
import redis.asyncio as redis

from infra.settings import settings
from schemas.events import new_id

pytestmark = pytest.mark.integration


async def test_a_value_round_trips_and_expires_on_its_ttl() -> None:
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    key = f"steno:test:{new_id()}"
    try:
        assert await client.set(key, "héllo", ex=60)
        assert await client.get(key) == "héllo"
        assert 0 < await client.ttl(key) <= 60
    finally:
        await client.delete(key)
        await client.aclose()
