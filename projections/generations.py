"""Generations of the views, and which one is live.

A generation is one complete copy of both views under one name: the Cassandra keyspace of its
history and the Redis namespace of its active context. The configured keyspace
(`settings.cassandra.keyspace`) is the first. `steno replay --swap` builds a new generation from
the log beside the live one while the service keeps answering, then makes it live.

The pointer is one Redis hash with two fields: `live`, the generation readers read, and, during a
swap, `next`, the one being built. Readers (the API's history reads, the context assembler) look
`live` up on every read, and the live projection both fields before every batch: one round trip,
about 0.1 ms, so no process keeps reading an old generation after a swap. While `next` is set the
projection writes each batch to `next` first, then to `live`; so once `next` has caught up it holds
everything `live` does at every moment, and the switch of `live` to it (`projections.swap`) never
shows a reader less than it saw before. Every change is a compare-and-set on both fields.

Redis holds the pointer because every reader already asks Redis on its hot path; it is persisted
(AOF), and a single key is served by a Redis Cluster too. Without it the configured keyspace is
live, so a stack that never swapped needs nothing.

The reply claims that the projection releases stay in their own namespace whatever the
generation (`schemas.claims`): they are the API's admission state, not a view of the log.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio
from cassandra.cluster import Cluster
from redis.asyncio.client import Pipeline

from infra import cassandra
from infra.settings import ContextSettings, settings
from projections import active_context
from projections.active_context import ActiveContext
from projections.history import History
from projections.projector import Projector
from schemas.claims import NAMESPACE as CLAIMS_NAMESPACE

POINTER = "steno:views"
RETIRE_AFTER_S = 30.0
"""How long a process keeps a generation's Cassandra session once the pointer stopped naming it:
requests that picked the generation before a swap finish on it; then the session is closed. The
driver opens a connection pool for every open session on every host that comes back, and a
session whose keyspace is gone (an old generation dropped after a swap) fails that, which keeps
the host down for every session: after a Cassandra restart the process could neither read nor
write anything until it was restarted itself."""
NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")  # a Cassandra keyspace name (lower case)

# KEYS: the pointer. ARGV: the generation live without it; the expected live and next; the new
# live and next. An absent `next` is ''. Returns 'ok', or {live, next} as they are.
MOVE_LUA = """
local live = redis.call('HGET', KEYS[1], 'live') or ARGV[1]
local next = redis.call('HGET', KEYS[1], 'next') or ''
if live ~= ARGV[2] or next ~= ARGV[3] then return {live, next} end
redis.call('HSET', KEYS[1], 'live', ARGV[4])
if ARGV[5] == '' then redis.call('HDEL', KEYS[1], 'next') else redis.call('HSET', KEYS[1], 'next', ARGV[5]) end
return 'ok'
"""

log = logging.getLogger(__name__)


class SwapRefused(RuntimeError):
    """The pointer is not as the swap expects: another swap happened, or is under way."""


def live_now() -> str:
    """The live generation's name, for callers outside an event loop (`steno up` migrates it: this
    is the projections' `steno.keyspaces` entry point, see `infra.components`)."""
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        return client.hget(POINTER, "live") or settings.cassandra.keyspace  # type: ignore[return-value]  # redis-py: Awaitable | value (redis/redis-py#2399)
    finally:
        client.close()


def checked_name(name: str) -> str:
    """The name, if it can name both a keyspace and a namespace; else a ValueError that says why."""
    if NAME.fullmatch(name) is None:
        raise ValueError(
            f"{name!r} cannot name a generation: use 1-48 lower-case letters, digits and underscores, "
            "starting with a letter (it becomes a Cassandra keyspace)"
        )
    return name


class Generations:
    """The live generation's name, and the views of any generation, over one Cassandra cluster and
    one Redis client. `first` is the generation live before any swap (`settings.cassandra.keyspace`);
    it, `pointer` and `claims_namespace` are parameters so that tests can use scratch ones."""

    def __init__(
        self,
        cluster: Cluster,
        client: redis.asyncio.Redis,
        config: ContextSettings,
        first: str,
        pointer: str = POINTER,
        claims_namespace: str = CLAIMS_NAMESPACE,
    ) -> None:
        self._cluster = cluster
        self._redis = client
        self._config = config
        self._pointer = pointer
        self._first = first
        self._claims_namespace = claims_namespace
        self._move = client.register_script(MOVE_LUA)
        self._views: dict[str, Projector] = {}
        self._opening = asyncio.Lock()
        self._last_seen = first
        self._last_named: dict[str, float] = {}  # generation -> when the pointer last named it
        self.retire_after_s = RETIRE_AFTER_S

    async def live(self) -> str:
        """The live generation's name.

        If Redis cannot be reached, the last one seen: history reads then keep working, on the
        generation that was live a moment ago, while only the active context is out.
        """
        try:
            self._last_seen = await self._redis.hget(self._pointer, "live") or self._first  # type: ignore[misc]  # redis-py: Awaitable | value (redis/redis-py#2399)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("cannot read the live generation (%r): using %s", exc, self._last_seen)
            return self._last_seen
        await self._named([self._last_seen])
        return self._last_seen

    async def views(self, name: str) -> Projector:
        """Both views of the generation; its Cassandra session is opened on first use and kept."""
        async with self._opening:
            if name not in self._views:
                session = await asyncio.to_thread(self._cluster.connect, name)
                context = ActiveContext(
                    self._redis, self._config, namespace=name, claims_namespace=self._claims_namespace
                )
                self._views[name] = Projector(History(session), context)
        return self._views[name]

    async def live_views(self) -> Projector:
        return await self.views(await self.live())

    async def read_live(self, reads: Callable[[Pipeline, Projector], None]) -> list[Any]:
        """The results of `reads` (Redis commands it queues on a pipeline) on the live generation,
        in the round trip that asks which generation is live: they are queued for the one last
        seen live and, should the pointer name another (a swap since), queued again on that one.
        Redis being out raises (unlike `live`): these reads are of Redis itself."""
        while True:
            guess = self._last_seen
            views = await self.views(guess)
            pipe = self._redis.pipeline(transaction=False)
            pipe.hget(self._pointer, "live")
            reads(pipe, views)
            live, *results = await pipe.execute()
            self._last_seen = live or self._first
            await self._named([self._last_seen])
            if self._last_seen == guess:
                return results

    async def written(self) -> list[Projector]:
        """The views the live projection writes, in the order it must: the generation being built
        (during a swap), then the live one."""
        live, next_ = await self._redis.hmget(self._pointer, ["live", "next"])  # type: ignore[misc]  # redis-py: Awaitable | value (redis/redis-py#2399)
        names = [name for name in (next_, live or self._first) if name]
        await self._named(names)
        return [await self.views(name) for name in dict.fromkeys(names)]

    async def _named(self, names: list[str]) -> None:
        """The pointer names these generations now; close the sessions of those it stopped naming
        `retire_after_s` ago (see RETIRE_AFTER_S). Views opened for a generation the pointer never
        named (a replay's target before it is swapped in) stay open: their user closes them."""
        now = time.monotonic()
        self._last_named.update(dict.fromkeys(names, now))
        retired = [name for name, named in self._last_named.items() if now - named > self.retire_after_s]
        for name in retired:
            del self._last_named[name]
            if (views := self._views.pop(name, None)) is not None:
                log.info("closing the session of generation %s: the pointer no longer names it", name)
                await asyncio.to_thread(views.history.close)

    async def begin(self, live: str, new: str) -> None:
        """Have the live projection write `new` too (first), while `live` stays live; a swap to
        `new` that was interrupted is taken up again."""
        try:
            await self._change((live, ""), (live, checked_name(new)))
        except SwapRefused:
            await self._change((live, new), (live, new))

    async def finish(self, live: str, new: str) -> None:
        """Make `new` live; the projection then writes it alone."""
        await self._change((live, new), (new, ""))

    async def abandon(self, live: str, new: str) -> None:
        """Stop writing `new` (a swap that failed); `live` stays live."""
        await self._change((live, new), (live, ""))

    async def _change(self, expected: tuple[str, str], new: tuple[str, str]) -> None:
        """Compare-and-set the pointer's (live, next); SwapRefused, saying how it is, if not as expected."""
        outcome = await self._move(keys=[self._pointer], args=[self._first, *expected, *new])
        if outcome != "ok":
            live, next_ = outcome
            under_way = f", and a swap to {next_} is under way (rerun it to finish it)" if next_ else ""
            raise SwapRefused(f"expected {expected[0]} live, but {live} is{under_way}: not changed")


@asynccontextmanager
async def connected() -> AsyncIterator[Generations]:
    """Generations over the configured Cassandra and Redis, closed on exit."""
    cluster, _ = await asyncio.to_thread(cassandra.connect)
    client = active_context.connect()
    try:
        yield Generations(cluster, client, settings.context, settings.cassandra.keyspace)
    finally:
        await client.aclose()
        await asyncio.to_thread(cluster.shutdown)
