"""The local Cassandra node is the real thing: 5.0, reachable over CQL, and storing what we write.

Needs the stack up and migrated (`make up`); nothing here is mocked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cassandra.cluster import Session

from infra import cassandra
from infra.settings import settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    cluster, session = cassandra.connect(keyspace=settings.cassandra.keyspace)
    yield session
    cluster.shutdown()


@pytest.fixture
def scratch_table(session: Session) -> Iterator[str]:
    """A throwaway table with a unique name, dropped afterwards, so runs never collide."""
    name = f"test_roundtrip_{uuid.uuid4().hex[:12]}"
    session.execute(
        f"CREATE TABLE {name} ("
        " conversation_id uuid, seq int, text text, at timestamp, tags set<text>,"
        " PRIMARY KEY (conversation_id, seq))"
    )
    yield name
    session.execute(f"DROP TABLE IF EXISTS {name}")


def test_release_version_is_cassandra_5_0(session: Session) -> None:
    row = session.execute("SELECT release_version FROM system.local").one()
    assert row.release_version.startswith("5.0")


def test_migrations_created_the_keyspace(session: Session) -> None:
    keyspace = session.cluster.metadata.keyspaces[settings.cassandra.keyspace]
    assert keyspace.replication_strategy.replication_factor == 1
    versions = {row.version for row in session.execute("SELECT version FROM schema_migrations")}
    assert 1 in versions


def test_prepared_insert_and_select_round_trip(session: Session, scratch_table: str) -> None:
    conversation_id = uuid.uuid4()
    at = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    written = [(seq, f"token {seq} — ünïcode ✓", {"a", f"t{seq}"}) for seq in range(3)]
    insert = session.prepare(
        f"INSERT INTO {scratch_table} (conversation_id, seq, text, at, tags) VALUES (?, ?, ?, ?, ?)"
    )
    for seq, text, tags in written:
        session.execute(insert, (conversation_id, seq, text, at, tags))

    select = session.prepare(
        f"SELECT seq, text, at, tags FROM {scratch_table} WHERE conversation_id = ?"
    )
    rows = list(session.execute(select, (conversation_id,)))

    assert [(r.seq, r.text, r.tags) for r in rows] == written  # clustering order: seq ascending
    assert all(r.at.replace(tzinfo=UTC) == at for r in rows)
