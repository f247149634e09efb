"""How many times generation of a response has begun, across bridge crashes and restarts.

A request is committed only after its final event (rule 6), so a bridge that dies mid-stream
leaves it to be redelivered, to this or another instance. The counter lives in Redis, shared by
every instance, so the retry knows it is one (and says so with ResponseRestarted), and a request
that keeps killing bridges is failed after `max_attempts` instead of looping forever.
"""

from __future__ import annotations

import redis.asyncio as redis

from schemas.topics import INFERENCE_REQUESTS

KEY = "steno:attempt:{response_id}"
TTL_MS = INFERENCE_REQUESTS.retention_ms  # a request cannot be redelivered after it left the log


class AttemptCounter:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    async def begin(self, response_id: str) -> int:
        """Count one more attempt at the response and return its number (1 for the first)."""
        key = KEY.format(response_id=response_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.pexpire(key, TTL_MS)
            attempt, _ = await pipe.execute()
        return int(attempt)
