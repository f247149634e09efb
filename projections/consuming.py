"""The discipline every consumer of the log in `projections/` follows, in one place.

The history projection, the analytics figures and the Parquet export all consume in batches,
commit only after their effect (rule 2), send what they cannot handle to the dead letters with
the reason (rule 7), and wait out an unavailable store instead of skipping its records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.kafka_clients import EventProducer, Record, dead_letter
from infra.settings import settings
from schemas.events import Event
from schemas.serde import UndecodableEvent, decode
from schemas.topics import Topic

log = logging.getLogger(__name__)


class GroupInUseError(RuntimeError):
    """A reset was asked for while instances of the consumer group are consuming."""


def position(record: Message) -> str:
    """Where a record is, as logs and dead letters name it: topic[partition]@offset."""
    return f"{record.topic()}[{record.partition()}]@{record.offset()}"


def log_partitions(what: str) -> Callable[[Consumer, list[TopicPartition]], None]:
    """A rebalance callback that says which partitions this instance now owns or lost."""

    def callback(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions %s: %s", what, sorted((p.topic, p.partition) for p in partitions))

    return callback


def decode_event(record: Message) -> Event:
    """The record's event; `UndecodableEvent` for bytes that are none, or a dead letter (which has
    no place on the topics these consumers read)."""
    event = decode(record.value())
    if not isinstance(event, Event):
        raise UndecodableEvent(f"{event.type} does not belong on {record.topic()}")
    return event


def valid_records(records: list[Message]) -> list[Message]:
    """The records of a batch, less the client's error reports (logged: they carry no event)."""
    for failed in (r for r in records if r.error() is not None):
        log.warning("consumer error: %s", failed.error())
    return [r for r in records if r.error() is None]


async def commit_handled(consumer: Consumer, done: Sequence[Message]) -> None:
    """Commit past the handled records."""
    ends = {(r.topic, r.partition): r.offset + 1 for r in map(Record.of, done)}
    await commit_positions(consumer, [TopicPartition(topic, part, end) for (topic, part), end in ends.items()])


class SparseCommits:
    """Offsets handled but not committed yet, committed at most every `every_s`, when the consumer
    finds nothing new, or on stop: each commit is a Kafka request, and under load the projection
    handles a batch every few milliseconds (three a message). Committing later only means more
    redelivery after a crash, which the idempotent effects absorb; nothing is committed before its
    effect (rule 2)."""

    def __init__(self, consumer: Consumer, every_s: float) -> None:
        self._consumer = consumer
        self._every_s = every_s
        self._ends: dict[tuple[str, int], int] = {}
        self._last = time.monotonic()

    def handled(self, records: Sequence[Message]) -> None:
        self._ends.update({(r.topic, r.partition): r.offset + 1 for r in map(Record.of, records)})

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions taken away (a rebalance): their new owner goes on from the last commit."""
        for partition in partitions:
            self._ends.pop((partition.topic, partition.partition), None)

    async def commit(self, *, unless_recent: bool) -> None:
        """Commit what was handled; `unless_recent`: not if the last commit was under `every_s` ago."""
        if unless_recent and time.monotonic() - self._last < self._every_s:
            return
        ends, self._ends, self._last = self._ends, {}, time.monotonic()
        await commit_positions(self._consumer, [TopicPartition(t, p, end) for (t, p), end in ends.items()])


async def commit_positions(consumer: Consumer, positions: list[TopicPartition]) -> None:
    """Commit the next offsets to read; a failed commit only means their records are redelivered."""
    if not positions:
        return
    try:
        await asyncio.to_thread(consumer.commit, offsets=positions, asynchronous=False)
    except KafkaException as exc:
        log.warning("commit failed, records before %s will be redelivered: %s", positions, exc)


async def send_to_dead_letters(
    producer: EventProducer, dead_letters: Topic, record: Message, processor: str, reason: str
) -> None:
    """Rule 7: park the record with the reason, so its partition moves on."""
    log.error("dead-lettering %s: %s", position(record), reason)
    key = (record.key() or b"").decode(errors="replace")
    await producer.send(dead_letters, dead_letter(Record.of(record), processor, reason), key=key)


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` (a retry's back-off); True if `stop` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


def forget_committed_offsets(group: str) -> None:
    """Drop the group's committed offsets, so its next start reads every topic from the beginning.

    Kafka refuses while the group has members: offsets would be re-committed under us.
    """
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    [deleted] = admin.delete_consumer_groups([group], request_timeout=10).values()
    try:
        deleted.result(timeout=15)
    except KafkaException as exc:
        code = exc.args[0].code()
        if code == KafkaError.GROUP_ID_NOT_FOUND:
            return  # never committed: it starts from the beginning anyway
        if code == KafkaError.NON_EMPTY_GROUP:
            raise GroupInUseError(f"consumer group {group} is consuming: stop its running instance first") from exc
        raise
