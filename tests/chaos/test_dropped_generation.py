"""A generation dropped after a swap must not keep a process off Cassandra once Cassandra restarts.

Found by hand: the API had read from a scratch generation (live for a while during a replay
test, then swapped back and dropped); after Cassandra was restarted, the API's Cassandra checks
failed until the API itself was restarted. The driver opens a connection pool for every open
session on every host that comes back, and a session bound to a dropped keyspace fails that,
which keeps the host down for every session of the process. `Generations` now closes the
session of a generation the pointer stopped naming (`projections.generations.RETIRE_AFTER_S`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from cassandra.cluster import Cluster

from infra import cassandra, migrate
from infra.settings import settings
from projections import active_context
from projections.generations import Generations
from tests.chaos.faults import kill_server
from tests.integration.steno_client import until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

RESTARTED_S = 60.0  # Cassandra back and the process reading again, at most


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    cluster, _ = await asyncio.to_thread(cassandra.connect)
    yield cluster
    await asyncio.to_thread(cluster.shutdown)


async def test_a_process_reads_again_after_cassandra_restarts_though_a_generation_it_read_was_dropped(
    cluster: Cluster,
) -> None:
    run = uuid.uuid4().hex[:12]
    first, scratch = settings.cassandra.keyspace, f"steno_test_{run}"
    client = active_context.connect()
    known = Generations(cluster, client, settings.context, first=first, pointer=f"test-{run}:views")
    known.retire_after_s = 0.0  # no request of this test is in flight on the old generation
    await asyncio.to_thread(migrate.apply_all, scratch)
    try:
        await swap(known, first, scratch)
        await (await known.live_views()).history.messages(run)  # this process now has a session on it
        await swap(known, scratch, first)
        assert await known.live() == first
    finally:
        await asyncio.to_thread(cluster.connect().execute, f"DROP KEYSPACE IF EXISTS {scratch}", timeout=60)
        await client.delete(f"test-{run}:views")

    fault = kill_server("cassandra")
    await asyncio.to_thread(fault.recover, await asyncio.to_thread(fault.strike))

    await until(lambda: serves(cluster, known), timeout_s=RESTARTED_S)
    await client.aclose()


async def swap(known: Generations, live: str, new: str) -> None:
    await known.begin(live, new)
    await known.finish(live, new)


async def serves(cluster: Cluster, known: Generations) -> bool:
    """Whether the driver counts Cassandra up and the live generation's history answers a read.
    (Stuck, the driver keeps the host down, and only a read slipping into a reconnection attempt
    gets an answer.)"""
    if not all(host.is_up for host in cluster.metadata.all_hosts()):
        return False
    try:
        await (await known.live_views()).history.messages(str(uuid.uuid4()))
    except Exception:
        return False
    return True
