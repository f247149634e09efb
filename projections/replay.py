"""Replay the conversation log into the views: the second driver of `Projector`, beside the live
runner, so a replay builds exactly the state the live system built.

Replay reads the records of a scope (`projections.log_range`: the whole log by default, as it
stands when replay starts) in large batches and applies each batch like the runner does: history
rows written concurrently (a conversation's in log order), then the context cache in one pipelined
round trip, while the next batch's history is being written. It is idempotent: history writes
carry event-derived write timestamps, and the cache skips what its watermark covers, so it is
safe beside the live runner and safe to run twice. A store that cannot be reached stops it; run
it again once the store is back.

Emptying the views first (`--reset`) is refused while the live runner consumes into them: it
would move the cache's watermark past conversations the replay has not rebuilt yet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from infra import kafka_clients
from infra.process import say
from infra.settings import settings
from projections.log_range import Ranges, Scope, ends_now, ranges
from projections.projector import Applied, Projector, Staged
from projections.runner import GROUP, POLL_S
from schemas.events import new_id
from schemas.topics import CONVERSATIONS, Topic

BATCH_SIZE = 2000  # larger than the runner's: more conversations per batch to write concurrently


class LiveRunnerError(RuntimeError):
    """`--reset` was asked for the live views while the live runner is consuming."""


@dataclass
class Summary:
    """How far a replay got, and at what pace."""

    total: int = 0  # records in the scope
    read: int = 0
    skipped: int = 0  # records no view could apply: the live runner dead-lettered them
    rows: int = 0  # history rows written
    conversations: set[str] = field(default_factory=set)
    ends: Ranges = field(default_factory=dict)  # the ranges read, for a later pass to go on from
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def add(self, read: int, applied: Applied) -> None:
        self.read += read
        self.skipped += len(applied.failed)
        self.rows += applied.rows
        self.conversations.update(event.conversation_id for event in applied.events)

    def __str__(self) -> str:
        seconds = max(self.seconds, 1e-9)
        return (
            f"{self.read:,} events read ({self.skipped:,} skipped), {self.rows:,} rows written, "
            f"{len(self.conversations):,} conversations, {self.seconds:.1f} s "
            f"({self.read / seconds:,.0f} events/s, {self.rows / seconds:,.0f} rows/s)"
        )


Report = Callable[[Summary], None]


def quiet(_: Summary) -> None:
    pass


async def replay(
    projector: Projector, conversations: Topic = CONVERSATIONS, scope: Scope = Scope(), report: Report = quiet
) -> Summary:
    """Apply the scope of the log, as it stands now, to the projector's views.

    `conversations` is a parameter so that tests and benchmarks can replay a scratch log.
    """
    with reader() as consumer:
        summary = Summary()
        await _apply(projector, consumer, conversations, ranges(consumer, conversations, scope), scope, summary, report)
        return summary


async def replay_more(
    projector: Projector, summary: Summary, conversations: Topic = CONVERSATIONS, report: Report = quiet
) -> int:
    """Go on from where the summary's replay ended to the log's end now; returns the records read."""
    with reader() as consumer:
        read = summary.read
        await _apply(
            projector,
            consumer,
            conversations,
            ends_now(consumer, conversations, summary.ends),
            Scope(),
            summary,
            report,
        )
        return summary.read - read


@contextmanager
def reader() -> Iterator[Consumer]:
    consumer = kafka_clients.consumer(f"steno-replay-{new_id()}")  # only assign(): joins no group
    try:
        yield consumer
    finally:
        consumer.close()


async def _apply(
    projector: Projector,
    consumer: Consumer,
    topic: Topic,
    todo: Ranges,
    scope: Scope,
    summary: Summary,
    report: Report,
) -> None:
    """Apply the records of the ranges (of the scope's conversation only, if it names one)."""
    summary.total += sum(end - start for start, end in todo.values())
    summary.ends.update(todo)
    remaining = {partition: end for partition, (start, end) in todo.items() if end > start}
    consumer.assign([TopicPartition(topic.name, p, todo[p][0]) for p in remaining])
    caching: asyncio.Task[None] | None = None  # the previous batch's cache writes, overlapping this batch's history
    while remaining:
        records = await asyncio.to_thread(kafka_clients.next_batch, consumer, POLL_S, BATCH_SIZE)
        for failed in (r for r in records if r.error() is not None):
            raise KafkaException(failed.error())
        in_range = [r for r in records if _before_end(r, remaining)]
        staged = await projector.apply_history(_of_conversation(in_range, scope.conversation))
        if caching is not None:
            await caching
        caching = asyncio.create_task(_cache(projector, staged, len(in_range), summary, report))
        _drop_finished(consumer, topic, remaining)
    if caching is not None:
        await caching
    summary.finished = time.monotonic()


async def _cache(projector: Projector, staged: Staged, read: int, summary: Summary, report: Report) -> None:
    """A batch's second half (see `Projector.apply`), then its place in the summary."""
    applied = await projector.apply_context(staged)
    for record, reason in applied.failed:
        say(f"replay: skipped {record.topic()}[{record.partition()}]@{record.offset()}: {reason}")
    summary.add(read, applied)
    report(summary)


def _before_end(record: Message, ends: dict[int, int]) -> bool:
    partition, offset = kafka_clients.position(record)
    return offset < ends.get(partition, -1)


def _of_conversation(records: list[Message], conversation: str | None) -> list[Message]:
    if conversation is None:
        return records
    key = conversation.encode()
    return [r for r in records if r.key() == key]


def _drop_finished(consumer: Consumer, topic: Topic, remaining: dict[int, int]) -> None:
    """Forget the partitions whose position reached the end of their range."""
    positions = consumer.position([TopicPartition(topic.name, p) for p in remaining])
    for position in positions:
        if position.offset >= remaining[position.partition]:
            del remaining[position.partition]


async def empty_views(projector: Projector, live: bool, live_group: str = GROUP) -> None:
    """Empty both views, so the replay rebuilds them from nothing; refused for the live views
    while the live runner consumes."""
    if live:
        admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
        members = len(admin.describe_consumer_groups([live_group])[live_group].result(timeout=10).members)
        if members:
            raise LiveRunnerError(
                f"consumer group {live_group} has {members} member(s) writing into these views: stop "
                "`python -m projections` first, or rebuild into a new generation with --swap"
            )
    await projector.history.truncate()
    await projector.context.clear()
