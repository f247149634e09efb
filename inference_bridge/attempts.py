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
says so. A bridge that dies while writing them (its ResponseCompleted in the log, its
ResponseEnded or the mark not yet) leaves a narrower window: before writing them an attempt marks
the response `ending` (with its clock), in the same round trip as its last fence check, and
`begin` hands the mark to the next attempt, which looks in the log for what landed
(`inference_bridge.final_events`) instead of answering again.

The counter is also the fence between attempts: every attempt gets its own number, so tokens of
two attempts never share one, and a generation whose number is no longer the newest stops
writing (see `current`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import redis.asyncio as redis

from schemas.topics import INFERENCE_REQUESTS

KEY = "steno:attempt:{response_id}"
DELIVERIES_KEY = "steno:deliveries:{response_id}"
FINISHED_KEY = "steno:finished:{response_id}"
ENDING_KEY = "steno:ending:{response_id}"
TTL_MS = INFERENCE_REQUESTS.retention_ms  # a request cannot be redelivered after it left the log
CHECK_TIMEOUT_S = 0.5
REPLY_TIMEOUT_S = 5.0  # a Redis that has not answered a command in this long is treated as down

log = logging.getLogger(__name__)

# The fence check before an attempt's final events, and the mark that they are being written.
# KEYS: the attempt counter, the ending mark. ARGV: this attempt, its wall clock (ms), the TTL (ms).
ENDING_LUA = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > tonumber(ARGV[1]) then
    return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"""


def connect(url: str) -> redis.Redis:
    """The bridge's Redis client. `Attempts` bounds each of its commands with asyncio's timeout,
    not with redis-py's `socket_timeout`: a command read under that one loses its task's
    cancellation a third to half the time (redis-py 6.4, Python 3.11), returning its reply instead, so
    a generation abandoned in a fence check ran on to its reply's end, holding its partition's
    hand-over that long, and then answered the request its retry was to answer."""
    client: redis.Redis = redis.Redis.from_url(url)
    return client


def _bounded() -> asyncio.Timeout:
    """The bound on `begin` and `finish`: a Redis that stalls (paused, cut off) must fail them as
    a Redis that is down does, stopping the bridge to be restarted, rather than hold it: a
    generation held in `finish` while its partition is revoked holds the rebalance, and the
    bridge's place in its group, with it."""
    return asyncio.timeout(REPLY_TIMEOUT_S)


@dataclass(frozen=True)
class Begun:
    attempt: int  # this attempt's number, counted over every bridge and every retry: the fence
    deliveries: int  # how many times the request was taken up: 1, plus one per bridge that died on it
    # When an earlier attempt began writing its final events (its bridge's clock, ms): they may
    # be in the log. None when none did.
    ending_since_ms: int | None = None


class Attempts:
    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._ending = client.register_script(ENDING_LUA)

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
        async with _bounded(), self._client.pipeline(transaction=True) as pipe:
            pipe.exists(FINISHED_KEY.format(response_id=response_id))
            for key in keys:
                pipe.incr(key)
                pipe.pexpire(key, TTL_MS)
            pipe.get(ENDING_KEY.format(response_id=response_id))
            finished, attempt, _, *rest, ending = await pipe.execute()
        deliveries = int(rest[0]) if rest else 0
        return None if finished else Begun(int(attempt), deliveries, None if ending is None else int(ending))

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

    async def ending(self, response_id: str, attempt: int) -> bool | None:
        """The fence check before `attempt` writes its final events (False: a newer attempt began,
        write nothing), and, when it passes, the mark that they are being written (`begin` hands
        it to a later attempt, should this one die before `finish`). None when Redis does not
        answer at once: the check is skipped, as in `current`, and no mark is left."""
        keys = [KEY.format(response_id=response_id), ENDING_KEY.format(response_id=response_id)]
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                return bool(await self._ending(keys=keys, args=[attempt, int(time.time() * 1000), TTL_MS]))
        except (TimeoutError, redis.RedisError) as exc:
            log.warning("attempt check of %s skipped: %s", response_id, exc)
            return None

    async def finish(self, response_id: str) -> None:
        """The response's final events are acknowledged: a redelivery of its request is a no-op."""
        async with _bounded():
            await self._client.set(FINISHED_KEY.format(response_id=response_id), 1, px=TTL_MS)
