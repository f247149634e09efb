"""How many times generation of a response has begun, and whether it has already ended, across
bridge crashes and restarts.

A request is committed only after its final event (rule 6), so a bridge that dies mid-stream
leaves it to be redelivered, to this or another instance. The counter lives in Redis, shared by
every instance, so the retry knows it is one (and says so with ResponseRestarted), and a request
that keeps killing bridges is failed after `max_attempts` instead of looping forever.

A bridge can also die after the final events are in the log but before the commit. The
redelivered request must not be answered twice (a live client would see a `restart` after
`done`), so a response whose final events were acknowledged is marked finished, and `begin`
says so. The window left is one Redis write after the acknowledgements, not a commit interval.

The counter is also the fence between attempts: every attempt gets its own number, so tokens of
two attempts never share one, and a generation whose number is no longer the newest stops
writing (see `current`).
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as redis

from schemas.topics import INFERENCE_REQUESTS

KEY = "steno:attempt:{response_id}"
FINISHED_KEY = "steno:finished:{response_id}"
TTL_MS = INFERENCE_REQUESTS.retention_ms  # a request cannot be redelivered after it left the log
CHECK_TIMEOUT_S = 0.5

log = logging.getLogger(__name__)


class Attempts:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    async def begin(self, response_id: str) -> int | None:
        """Count one more attempt at the response and return its number (1 for the first);
        None when the response already ended and its request is only being redelivered."""
        key = KEY.format(response_id=response_id)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.exists(FINISHED_KEY.format(response_id=response_id))
            pipe.incr(key)
            pipe.pexpire(key, TTL_MS)
            finished, attempt, _ = await pipe.execute()
        return None if finished else int(attempt)

    async def current(self, response_id: str) -> int | None:
        """The number of the newest attempt begun anywhere: an attempt that is no longer the newest
        was taken over (its partition moved while this bridge was frozen or cut off) and must stop.

        None when Redis does not answer at once: the check is then skipped rather than the reply
        failed or the bridge stopped, since a Redis restart is far likelier than a frozen bridge
        coming back at that very moment.
        """
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                return int(await self._client.get(KEY.format(response_id=response_id)) or 0)
        except (TimeoutError, redis.RedisError) as exc:
            log.warning("attempt check of %s skipped: %s", response_id, exc)
            return None

    async def finish(self, response_id: str) -> None:
        """The response's final events are acknowledged: a redelivery of its request is a no-op."""
        await self._client.set(FINISHED_KEY.format(response_id=response_id), 1, px=TTL_MS)
