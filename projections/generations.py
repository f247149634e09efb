"""Generations of the views, and which one is live.

A generation is one complete copy of both views under one name: the Cassandra keyspace of its
history and the Redis namespace of its active context. The configured keyspace
(`settings.cassandra.keyspace`) is the first. `steno replay --swap` builds a new generation from
the log beside the live one while the service keeps answering, then makes it live by writing its
name to one Redis key, the pointer.

Everyone follows the pointer at once. Readers (the API's history reads, the context assembler)
look it up on every read and the live projection before every batch: one GET, about 0.1 ms, so
no process keeps reading an old generation after a swap. Redis holds the pointer because every
reader already asks Redis on its hot path; it is persisted (AOF), and a single key is served by a
Redis Cluster too. Without the key the configured keyspace is live, so a stack that never swapped
needs nothing.

The in-flight claims stay in the base namespace whatever the generation: they are the API's
admission state, not a view of the log, and must outlive a swap.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
import redis.asyncio
from cassandra.cluster import Cluster

from infra import cassandra
from infra.settings import ContextSettings, settings
from projections import active_context
from projections.active_context import ActiveContext
from projections.history import History
from projections.projector import Projector

POINTER = "steno:views:live"
CLAIMS_NAMESPACE = "steno"
NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")  # a Cassandra keyspace name (lower case)

# KEYS: the pointer. ARGV: the generation live without it, the one expected live, the new one.
SWAP_LUA = """
local live = redis.call('GET', KEYS[1]) or ARGV[1]
if live ~= ARGV[2] then return live end
redis.call('SET', KEYS[1], ARGV[3])
return ARGV[3]
"""

log = logging.getLogger(__name__)


class SwapRefused(RuntimeError):
    """Another generation became live since the caller looked: swapping would undo that swap."""


def live_now() -> str:
    """The live generation's name, for callers outside an event loop (`steno up` migrates it)."""
    client = redis.Redis.from_url(settings.redis.url, decode_responses=True)
    try:
        return client.get(POINTER) or settings.cassandra.keyspace  # type: ignore[return-value]
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
    one Redis client. `pointer` and `first` are parameters so that tests can use scratch ones."""

    def __init__(
        self,
        cluster: Cluster,
        client: redis.asyncio.Redis,
        config: ContextSettings = settings.context,
        pointer: str = POINTER,
        first: str = settings.cassandra.keyspace,
        claims_namespace: str = CLAIMS_NAMESPACE,
    ) -> None:
        self._cluster = cluster
        self._redis = client
        self._config = config
        self._pointer = pointer
        self._first = first
        self._claims_namespace = claims_namespace
        self._swap = client.register_script(SWAP_LUA)
        self._views: dict[str, Projector] = {}
        self._opening = asyncio.Lock()
        self._last_seen = first

    async def live(self) -> str:
        """The live generation's name.

        If Redis cannot be reached, the last one seen: history reads then keep working, on the
        generation that was live a moment ago, while only the active context is out.
        """
        try:
            self._last_seen = await self._redis.get(self._pointer) or self._first
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("cannot read the live generation (%r): using %s", exc, self._last_seen)
        return self._last_seen

    async def views(self, name: str) -> Projector:
        """Both views of the generation; its Cassandra session is opened on first use and kept."""
        async with self._opening:
            if name not in self._views:
                session = await asyncio.to_thread(self._cluster.connect, name)
                context = ActiveContext(self._redis, self._config, namespace=name, claims_namespace=self._claims_namespace)
                self._views[name] = Projector(History(session), context)
        return self._views[name]

    async def live_views(self) -> Projector:
        return await self.views(await self.live())

    async def swap(self, expected: str, new: str) -> None:
        """Make `new` live, if `expected` still is (compare-and-set); SwapRefused if not."""
        live = await self._swap(keys=[self._pointer], args=[self._first, expected, checked_name(new)])
        if live != new:
            raise SwapRefused(f"{live} became live while {new} was being built (expected {expected}): not swapped")


@asynccontextmanager
async def connected() -> AsyncIterator[Generations]:
    """Generations over the configured Cassandra and Redis, closed on exit."""
    cluster, _ = await asyncio.to_thread(cassandra.connect)
    client = active_context.connect()
    try:
        yield Generations(cluster, client)
    finally:
        await client.aclose()
        await asyncio.to_thread(cluster.shutdown)
