"""What steno's views stand on: a write Cassandra acknowledged survives Cassandra's `kill -9`.

The projection commits its offsets once Cassandra has acknowledged a batch; an acknowledged
write that a crash then loses is gone from the history for good (only a replay brings it back).
The chaos suite found history rows missing after `kill -9 cassandra`; this test isolates the
store's own guarantee from steno's code: rows written from several threads until the kill, each
acknowledged one read back after the restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from cassandra.cluster import Cluster, Session

from infra.settings import settings
from schemas.events import new_id
from tests.chaos.faults import kill_server

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(600)]

WRITERS = 8
WRITE_BEFORE_KILL_S = 3.0


@pytest.fixture
def scratch_table() -> Iterator[str]:
    """A keyspace of its own, dropped afterwards (on the restarted Cassandra)."""
    keyspace = f"chaos_{new_id().replace('-', '_')}"
    cluster = Cluster([settings.cassandra.host], port=settings.cassandra.port)
    session = cluster.connect()
    session.execute(
        f"CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
    )
    session.execute(f"CREATE TABLE {keyspace}.rows (k int PRIMARY KEY, v text)")
    cluster.shutdown()
    yield f"{keyspace}.rows"
    cluster = Cluster([settings.cassandra.host], port=settings.cassandra.port)
    cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    cluster.shutdown()


def test_acknowledged_writes_survive_a_kill_9(scratch_table: str) -> None:
    cluster = Cluster([settings.cassandra.host], port=settings.cassandra.port)
    acknowledged = _write_until_killed(cluster.connect(), scratch_table)
    cluster.shutdown()

    cluster = Cluster([settings.cassandra.host], port=settings.cassandra.port)
    present = {row.k for row in cluster.connect().execute(f"SELECT k FROM {scratch_table}")}
    cluster.shutdown()
    lost = sorted(set(acknowledged) - present)
    assert len(acknowledged) > 1000, "too few writes before the kill to judge"
    assert not lost, (
        f"{len(lost)} of {len(acknowledged)} acknowledged writes lost, acknowledged "
        f"{min(acknowledged[k] for k in lost):.3f} to {max(acknowledged[k] for k in lost):.3f} s before the kill"
    )


def _write_until_killed(session: Session, table: str) -> dict[int, float]:
    """Write rows from WRITERS threads, kill Cassandra, restart it; each acknowledged key with
    how long before the kill it was acknowledged."""
    insert = session.prepare(f"INSERT INTO {table} (k, v) VALUES (?, ?)")
    acknowledged: dict[int, float] = {}

    def write(first: int) -> None:
        for k in range(first, 10**9, WRITERS):
            try:
                session.execute(insert, (k, "x" * 100), timeout=2)
            except Exception:  # the kill: every write from here on fails
                return
            acknowledged[k] = time.monotonic()

    threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    time.sleep(WRITE_BEFORE_KILL_S)  # load, not a wait for a condition: writes run meanwhile
    fault = kill_server("cassandra")
    killed_at = time.monotonic()
    gone = fault.strike()
    for thread in threads:
        thread.join(timeout=30)
    fault.recover(gone)
    return {k: killed_at - at for k, at in acknowledged.items()}
