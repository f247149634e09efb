"""`steno export`: a consumer group that writes the log to Parquet files an analyst can query with SQL.

Records are buffered and flushed to files (see `parquet_files` for the layout and why a crash
never doubles a row) every `flush_records` records or `flush_s` seconds; offsets are committed
only after a flush is on disk, so a restart resumes after the last flushed record. `--reset`
forgets the group's offsets: the retained log is exported again, replacing its files (files of
records the log no longer retains are kept). `--once` exports what the log holds now and exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, Message, TopicPartition

from infra import kafka_clients
from infra.backoff import doubling
from infra.kafka_clients import EventProducer, Record
from infra.settings import ExportSettings, settings
from projections.analytics.arrow_schema import event_schema
from projections.analytics.parquet_files import OffsetRange, prepare_partition, write_atomically
from projections.consuming import (
    commit_positions,
    decode_event,
    forget_committed_offsets,
    send_to_dead_letters,
    stopped_within,
    valid_records,
)
from schemas.events import Event
from schemas.serde import UndecodableEvent
from schemas.topics import CONTROL, CONVERSATIONS, DEAD_LETTERS, INFERENCE_REQUESTS, TOKENS, Topic

GROUP = "steno-export"
PROCESSOR = "export"
TOPICS = (CONVERSATIONS, INFERENCE_REQUESTS, TOKENS, CONTROL)
BATCH_SIZE = 5000
POLL_S = 0.5
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0

log = logging.getLogger(__name__)

Rows = dict[tuple[str, type[Event]], list[dict[str, Any]]]  # (day, event type) -> rows


@dataclass
class _Pending:
    """One partition's records since the last flush: its offset range and its rows by day and type."""

    first: int
    last: int = -1
    records: int = 0
    rows: Rows = field(default_factory=lambda: defaultdict(list))


class Exporter:
    """Exports `topics` under `out`; the topics are parameters so that tests can use scratch copies."""

    def __init__(
        self,
        consumer: Consumer,
        producer: EventProducer,
        out: Path,
        config: ExportSettings,
        topics: Sequence[Topic] = TOPICS,
        dead_letters: Topic = DEAD_LETTERS,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self._out = out
        self._config = config
        self._topics = topics
        self._dead_letters = dead_letters
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._buffered = 0
        self._oldest_buffered = time.monotonic()
        self._next: dict[tuple[str, int], int] = {}  # per assigned partition: the offset to read next

    async def run(self, stop: asyncio.Event, once: bool = False) -> None:
        """Export until `stop` is set (or, with `once`, until the log's current end); flush on the way out."""
        self._consumer.subscribe([t.name for t in self._topics], on_assign=self._assigned, on_revoke=self._revoked)
        while not stop.is_set():
            records = await asyncio.to_thread(kafka_clients.next_batch, self._consumer, POLL_S, BATCH_SIZE)
            for record in valid_records(records):
                await self._take(record)
            if once and not records and await asyncio.to_thread(self._caught_up):
                break
            if self._buffered >= self._config.flush_records or self._waited_out():
                await self._flush(stop)
        await self._flush(stop)

    async def _take(self, record: Message) -> None:
        """Buffer the record's row; an undecodable record is dead-lettered but still in the range."""
        at = Record.of(record)
        self._next[(at.topic, at.partition)] = at.offset + 1
        pending = self._pending.setdefault((at.topic, at.partition), _Pending(first=at.offset))
        pending.last = at.offset
        pending.records += 1
        if self._buffered == 0:
            self._oldest_buffered = time.monotonic()
        self._buffered += 1
        try:
            event = decode_event(record)
        except UndecodableEvent as exc:
            await send_to_dead_letters(self._producer, self._dead_letters, record, PROCESSOR, str(exc))
            return
        day = event.occurred_at.astimezone(UTC).date().isoformat()
        pending.rows[(day, type(event))].append(_row(event, at))

    def _waited_out(self) -> bool:
        return self._buffered > 0 and time.monotonic() - self._oldest_buffered >= self._config.flush_s

    async def _flush(self, stop: asyncio.Event) -> None:
        """Write the buffered rows, then commit past them; a failing disk is retried until `stop`."""
        if not self._pending:
            return
        waits = doubling(RETRY_FIRST_S, RETRY_MAX_S)
        while True:
            try:
                await asyncio.to_thread(self._write_files)
                break
            except OSError as exc:
                wait = next(waits)
                log.warning("cannot write under %s (%s); retrying in %.1fs", self._out, exc, wait)
                if await stopped_within(stop, wait):
                    return  # nothing committed: the records are read again on the next start
        ends = [TopicPartition(topic, partition, p.last + 1) for (topic, partition), p in self._pending.items()]
        await commit_positions(self._consumer, ends)
        log.info("exported %d records of %d partitions", self._buffered, len(self._pending))
        self._pending.clear()
        self._buffered = 0

    def _write_files(self) -> None:
        for (topic, partition), pending in self._pending.items():
            offsets = OffsetRange(topic, partition, pending.first, pending.last)
            for (day, event_type), rows in pending.rows.items():
                table = pa.Table.from_pylist(rows, schema=event_schema(event_type))
                name = event_type.model_fields["type"].default
                write_atomically(table, self._out / f"day={day}" / f"type={name}" / offsets.file_name)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start each new partition after its committed offset, first deleting uncommitted files."""
        for committed in consumer.committed(partitions, timeout=30):
            start = committed.offset
            if start < 0:  # nothing committed yet: the log's first retained record
                start, _ = consumer.get_watermark_offsets(committed, timeout=10)
            committed.offset = prepare_partition(self._out, committed.topic, committed.partition, start)
            self._next[(committed.topic, committed.partition)] = committed.offset
            log.info("exporting %s[%d] from offset %d", committed.topic, committed.partition, committed.offset)
        consumer.assign(partitions)

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Forget what was buffered of partitions moving elsewhere: uncommitted, their new owner reads it."""
        for revoked in partitions:
            where = (revoked.topic, revoked.partition)
            self._next.pop(where, None)
            dropped = self._pending.pop(where, None)
            if dropped is not None:
                self._buffered -= dropped.records

    def _caught_up(self) -> bool:
        """Every assigned partition has been read up to its end, as the latest fetch reported it.

        The end offsets a fetch brings back are used rather than asked for: a query waits behind
        the consumer's own long-poll fetch on the connection, half a second per partition.
        """
        ends = {where: self._end_offset(where) for where in self._next}
        return bool(ends) and all(end >= 0 and self._next[where] >= end for where, end in ends.items())

    def _end_offset(self, where: tuple[str, int]) -> int:
        """-1001 until a fetch of the partition reported it."""
        _, end = self._consumer.get_watermark_offsets(TopicPartition(*where), cached=True)
        return end


def _row(event: Event, at: Record) -> dict[str, Any]:
    return event.model_dump(exclude={"type"}) | {
        "kafka_topic": at.topic,
        "kafka_partition": at.partition,
        "kafka_offset": at.offset,
    }


async def serve(stop: asyncio.Event, out: Path, once: bool) -> None:
    producer = EventProducer()
    consumer = kafka_clients.consumer(GROUP)
    log.info("exporting %s as consumer group %s to %s", ", ".join(t.name for t in TOPICS), GROUP, out)
    try:
        await Exporter(consumer, producer, out, settings.export).run(stop, once=once)
    finally:
        consumer.close()
        producer.close()


def run(reset: bool = False, out: Path | None = None, once: bool = False) -> None:
    """The operator's entry point (`steno export`); stops on SIGINT or SIGTERM, flushing first."""
    out = settings.export.out_dir if out is None else out
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if reset:
        forget_committed_offsets(GROUP)  # raises GroupInUseError while another instance consumes
        log.warning("consumer group %s reset: exporting the log from its beginning", GROUP)
    asyncio.run(_until_signalled(out, once))


async def _until_signalled(out: Path, once: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(stop, out, once)
