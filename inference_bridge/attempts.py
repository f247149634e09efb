"""How many times generation of a response has begun, and whether it has already ended, across
bridge crashes and restarts.

A request is committed only after its final event (rule 6), so a bridge that dies mid-stream
leaves it to be redelivered, to this or another instance. The counter lives in Redis, shared by
every instance, so the retry knows it is one (and says so with ResponseRestarted), and a request
that keeps killing bridges is failed after `max_attempts` deliveries instead of looping forever
(a retry after Triton went away is an attempt, not a delivery: the server's restarts are bounded by
the retry budget instead).

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
from dataclasses import dataclass

import redis.asyncio as redis

from schemas.topics import INFERENCE_REQUESTS

KEY = "steno:attempt:{response_id}"
DELIVERIES_KEY = "steno:deliveries:{response_id}"
FINISHED_KEY = "steno:finished:{response_id}"
TTL_MS = INFERENCE_REQUESTS.retention_ms  # a request cannot be redelivered after it left the log
CHECK_TIMEOUT_S = 0.5

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Begun:
    attempt: int  # this attempt's number, counted over every bridge and every retry: the fence
    deliveries: int  # how many times the request was taken up: 1, plus one per bridge that died on it


class Attempts:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    async def begin(self, response_id: str) -> Begun | None:
        """The request is taken up (first delivery, or a redelivery after a bridge died): count
        one more attempt and one more delivery; None when the response already ended and its
        request is only being redelivered."""
        return await self._count(response_id, DELIVERIES_KEY)

    async def retry(self, response_id: str) -> int | None:
        """The same delivery starts over (its Triton went away): one more attempt, not one more
        delivery, so the server's restarts do not use up the deliveries `max_attempts` bounds.
        None when the response ended meanwhile."""
        begun = await self._count(response_id)
        return None if begun is None else begun.attempt

    async def _count(self, response_id: str, *also: str) -> Begun | None:
        keys = [KEY.format(response_id=response_id), *(key.format(response_id=response_id) for key in also)]
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.exists(FINISHED_KEY.format(response_id=response_id))
            for key in keys:
                pipe.incr(key)
                pipe.pexpire(key, TTL_MS)
            finished, attempt, _, *rest = await pipe.execute()
        deliveries = int(rest[0]) if rest else 0
        return None if finished else Begun(int(attempt), deliveries)

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
