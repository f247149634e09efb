"""The local Cassandra node is the real thing: 5.0, reachable over CQL, and storing what we write.

Needs the stack up and migrated (`make up`); nothing here is mocked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from cassandra import InvalidRequest
from cassandra.cluster import Session
from cassandra.query import SimpleStatement

from infra import cassandra, cql, migrate, process
from infra.settings import settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    if not cassandra.healthy():
        pytest.fail(
            f"no Cassandra at {settings.cassandra.host}:{settings.cassandra.port}: start the stack with `make up`"
        )
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


def test_the_node_runs_with_the_configured_timer_slack(session: Session) -> None:
    """Every thread of the node, its executor pools' workers included (infra/timer_slack.py)."""
    pid = process.running_pid(cassandra.service())
    assert pid is not None, "the node was not started by steno: `make up`"

    slacks = {int(Path(f"/proc/{thread.id}/timerslack_ns").read_text()) for thread in psutil.Process(pid).threads()}

    assert slacks == {settings.cassandra.timer_slack_ns}


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

    select = session.prepare(f"SELECT seq, text, at, tags FROM {scratch_table} WHERE conversation_id = ?")
    rows = list(session.execute(select, (conversation_id,)))

    assert [(r.seq, r.text, r.tags) for r in rows] == written  # clustering order: seq ascending
    assert all(r.at.replace(tzinfo=UTC) == at for r in rows)


def test_migrations_run_once_and_refuse_edits(session: Session, tmp_path: Path) -> None:
    keyspace = f"test_migrate_{uuid.uuid4().hex[:12]}"
    (tmp_path / "001_keyspace.cql").write_text((migrate.MIGRATIONS_DIR / "001_keyspace.cql").read_text())
    (tmp_path / "002_notes.cql").write_text(
        "CREATE TABLE IF NOT EXISTS notes (id int PRIMARY KEY, body text); -- a; comment\n"
        "INSERT INTO notes (id, body) VALUES (1, 'semi;colon');\n"
    )
    try:
        assert migrate.apply_all(keyspace, tmp_path) == 2
        assert migrate.apply_all(keyspace, tmp_path) == 0
        assert session.execute(f"SELECT body FROM {keyspace}.notes").one().body == "semi;colon"

        (tmp_path / "002_notes.cql").write_text("-- edited after it ran\n")
        with pytest.raises(migrate.MigrationError, match="edited"):
            migrate.apply_all(keyspace, tmp_path)
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}")


async def test_cql_rows_fetches_every_page(session: Session, scratch_table: str) -> None:
    conversation = uuid.uuid4()
    insert = session.prepare(f"INSERT INTO {scratch_table} (conversation_id, seq, text) VALUES (?, ?, ?)")
    outcomes = await cql.each(session, [insert.bind((conversation, seq, f"t{seq}")) for seq in range(25)], 4)
    assert outcomes == [(True, [])] * 25
    select = SimpleStatement(f"SELECT seq FROM {scratch_table}", fetch_size=10)
    assert session.execute(select).has_more_pages  # so the read below takes three pages
    rows = await cql.rows(session, select)
    assert [row.seq for row in rows] == list(range(25))


async def test_cql_each_reports_a_failure_and_runs_the_others(session: Session, scratch_table: str) -> None:
    good = SimpleStatement(f"INSERT INTO {scratch_table} (conversation_id, seq) VALUES ({uuid.uuid4()}, 1)")
    bad = SimpleStatement(f"INSERT INTO {scratch_table} (conversation_id, nonexistent) VALUES ({uuid.uuid4()}, 1)")
    outcomes = await cql.each(session, [bad, good], 2)
    assert outcomes[0][0] is False and isinstance(outcomes[0][1], InvalidRequest)
    assert outcomes[1] == (True, [])
    with pytest.raises(InvalidRequest):
        await cql.rows(session, bad)
