"""`steno export` against the real Kafka: a realistic mix of events on scratch copies of the
topics, exported to Parquet files, then queried with DuckDB as an analyst would; a restart
exports only what is new, and a reset rewrites the files without doubling a row."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from infra import kafka_clients
from infra.kafka_clients import EventProducer
from infra.settings import settings
from projections.analytics.export import PROCESSOR, Exporter
from projections.consuming import forget_committed_offsets
from schemas.events import DeadLetter
from schemas.topics import CONTROL, CONVERSATIONS, DEAD_LETTERS, TOKENS, Topic
from tests.event_mix import Conversation, realistic_mix
from tests.integration.log_io import committed_to_end, produce, produce_raw, read_all
from tests.integration.scratch import scratch_copies, scratch_group

pytestmark = pytest.mark.integration

EXPORT_S = 60.0


@dataclass(frozen=True)
class Topics:
    conversations: Topic
    tokens: Topic
    control: Topic
    dead_letters: Topic

    @property
    def exported(self) -> list[Topic]:
        return [self.conversations, self.tokens, self.control]


@pytest.fixture
def topics() -> Iterator[Topics]:
    with scratch_copies("export", [CONVERSATIONS, TOKENS, CONTROL, DEAD_LETTERS]) as copies:
        yield Topics(*copies)


@pytest.fixture
def group() -> Iterator[str]:
    with scratch_group("export") as group:
        yield group


async def export_once(group: str, topics: Topics, out: Path) -> None:
    """What `steno export --once` does, on the scratch topics: export to the log's current end."""
    consumer, producer = kafka_clients.consumer(group), EventProducer()
    exporter = Exporter(consumer, producer, out, settings.export, topics.exported, topics.dead_letters)
    try:
        await asyncio.wait_for(exporter.run(asyncio.Event(), once=True), EXPORT_S)
    finally:
        consumer.close()
        producer.close()


async def write(topics: Topics, conversations: list[Conversation]) -> None:
    await produce(topics.conversations, [event for c in conversations for event in c.log])
    await produce(topics.tokens, [event for c in conversations for event in c.tokens])
    await produce(topics.control, [event for c in conversations for event in c.control])


def sql(out: Path, query: str) -> list[tuple[Any, ...]]:
    """Run `query` over the export, whose files `events` and `<Type>` name, as the README shows."""
    connection = duckdb.connect()
    try:
        every = f"read_parquet('{out}/**/*.parquet', hive_partitioning = true, union_by_name = true)"
        connection.execute(f"CREATE VIEW events AS SELECT * FROM {every}")
        for (event_type,) in connection.execute("SELECT DISTINCT type FROM events").fetchall():
            files = f"'{out}/day=*/type={event_type}/*.parquet'"
            connection.execute(f"CREATE VIEW {event_type} AS SELECT * FROM read_parquet({files})")
        return connection.execute(query).fetchall()
    finally:
        connection.close()


def files(out: Path, pattern: str) -> set[Path]:
    return set(out.rglob(pattern))


def rows_by_type(out: Path) -> dict[str, int]:
    return dict(sql(out, "SELECT type, count(*) FROM events GROUP BY type"))


async def test_the_export_answers_sql_over_the_log(topics: Topics, group: str, tmp_path: Path) -> None:
    mix = realistic_mix(datetime.now(UTC) - timedelta(seconds=20))
    await write(topics, mix)
    poison = produce_raw(topics.tokens, mix[0].conversation_id, b"{not json")

    await export_once(group, topics, tmp_path)

    assert rows_by_type(tmp_path) == {
        "ConversationStarted": 3,
        "MessageSubmitted": 7,
        "MessageAccepted": 5,
        "MessageBlocked": 2,
        "ResponseCompleted": 3,
        "ResponseCancelled": 1,
        "ResponseFailed": 1,
        "ResponseStarted": 4,
        "TokenGenerated": 30,
        "ResponseEnded": 7,
        "GenerationCancelRequested": 1,
    }
    assert sql(tmp_path, "SELECT count(DISTINCT event_id) = count(*) FROM events") == [(True,)]
    assert sql(
        tmp_path,
        "SELECT category, count(*) FROM (SELECT unnest(categories) AS category FROM MessageBlocked)"
        " GROUP BY category ORDER BY 2 DESC",
    ) == [("weapons", 2), ("malware", 1)]
    ttft_ms = sql(
        tmp_path,
        "SELECT s.model, median(epoch_ms(t.occurred_at) - epoch_ms(s.occurred_at)) FROM TokenGenerated t"
        " JOIN MessageSubmitted s USING (response_id) WHERE t.seq = 0 GROUP BY s.model ORDER BY 1",
    )
    assert ttft_ms == [("scripted", 200), ("smollm2", 400)]
    assert sql(tmp_path, "SELECT sum(usage.completion_tokens) FROM ResponseCompleted") == [(11 + 11 + 5,)]
    [letter] = read_all(topics.dead_letters)
    assert isinstance(letter, DeadLetter)
    assert (letter.processor, letter.source_topic, letter.source_offset) == (PROCESSOR, poison.topic(), poison.offset())
    assert committed_to_end(group, topics.exported)


async def test_a_restart_exports_only_what_is_new_and_a_reset_rewrites_without_doubling(
    topics: Topics, group: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    await write(topics, realistic_mix(now - timedelta(seconds=20)))
    await export_once(group, topics, tmp_path)
    first_files = files(tmp_path, "*.parquet")

    later = Conversation(now)
    later.answered(1, "scripted", ttft_ms=100, tokens=4, itl_ms=10)
    await write(topics, [later])
    await export_once(group, topics, tmp_path)

    after_restart = rows_by_type(tmp_path)
    assert (after_restart["MessageSubmitted"], after_restart["TokenGenerated"]) == (8, 34)
    assert first_files < files(tmp_path, "*.parquet")  # new files beside the old ones

    forget_committed_offsets(group)
    await export_once(group, topics, tmp_path)

    assert rows_by_type(tmp_path) == after_restart
    assert sql(tmp_path, "SELECT count(DISTINCT event_id) = count(*) FROM events") == [(True,)]
    assert not files(tmp_path, ".*.tmp")
