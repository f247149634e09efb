"""The live projections runner: tails the conversation log into the live generation's views.

Rule 2: a batch's offsets are committed only after both views applied it, so a crash means
redelivery, which the views absorb. Rule 7: a record that cannot be decoded or applied goes to the
dead-letter topic with the reason and the partition moves on. A store that is down is different:
the runner retries the batch until the store is back, because skipping it would lose history.

The runner writes into the live generation of the views (`projections.generations`), and during
a swap into the one being built as well (first), as the pointer says before every batch. A
generation must never miss a record: when the generations written change, or a partition is newly
assigned, the partition's next record may lie past what one of them has applied (it was built up
to an earlier point, or another instance applied the records between elsewhere). The runner then
seeks the partition back to just after the lowest of their watermarks and applies from there:
whatever was applied already is absorbed, since every write is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from confluent_kafka import Consumer, Message, TopicPartition

from infra import kafka_clients, wedged
from infra.backoff import doubling
from infra.kafka_clients import EventProducer, Standing
from infra.membership import CHECK_EVERY_S, GroupCheck, GroupWatchdog
from infra.settings import settings
from infra.store_errors import STORE_UNAVAILABLE, STORE_WAITS
from projections import generations
from projections.consuming import (
    SparseCommits,
    log_partitions,
    send_to_dead_letters,
    stopped_within,
    valid_records,
)
from projections.projector import Applied, Projector
from schemas.topics import CONVERSATIONS, DEAD_LETTERS, Topic

GROUP = "steno-projections"
PROCESSOR = "projections"
BATCH_SIZE = 500
POLL_S = 0.5  # also how long a stop request may wait for the consumer
COMMIT_EVERY_S = 1.0  # at most this much is redelivered after a crash (see `SparseCommits`)
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0

log = logging.getLogger(__name__)

T = TypeVar("T")

WriteTargets = Callable[[], Awaitable[list[Projector]]]  # the views to write, in order; asked before every batch


class Runner:
    """Projects one conversation log, dead-lettering what it cannot apply.

    The topics are parameters so that tests can run it on scratch copies: the stack's own
    processors act on every event of the real log, and the real log is kept forever.
    """

    def __init__(
        self,
        written: WriteTargets,
        consumer: Consumer,
        producer: EventProducer,
        conversations: Topic = CONVERSATIONS,
        dead_letters: Topic = DEAD_LETTERS,
    ) -> None:
        self._written = written
        self._consumer = consumer
        self._producer = producer
        self._conversations = conversations
        self._dead_letters = dead_letters
        self._projectors: list[Projector] = []
        self._unchecked: set[int] = set()  # partitions whose next record must be checked against the watermark
        self._commits = SparseCommits(consumer, COMMIT_EVERY_S)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, committing batches after their effects."""
        self._consumer.subscribe([self._conversations.name], on_assign=self._assigned, on_revoke=self._revoked)
        try:
            while not stop.is_set():
                records = valid_records(
                    await asyncio.to_thread(kafka_clients.next_batch, self._consumer, POLL_S, BATCH_SIZE)
                )
                aligned = await _while_stores_are_down(partial(self._aligned, records), stop)
                if aligned is None:
                    return
                projectors, batch = aligned
                applied = await _while_stores_are_down(partial(_apply, projectors, batch), stop)
                if applied is None:
                    return
                await self._dead_letter(applied)
                self._commits.handled(batch)
                await self._commits.commit(unless_recent=bool(records))
        finally:
            await self._commits.commit(unless_recent=False)

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log_partitions("assigned")(consumer, partitions)
        self._unchecked.update(p.partition for p in partitions)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log_partitions("revoked")(consumer, partitions)
        self._unchecked.difference_update(p.partition for p in partitions)
        self._commits.forget(partitions)

    async def _aligned(self, records: list[Message]) -> tuple[list[Projector], list[Message]]:
        """The views to write and the records to apply to them. A partition whose next record lies
        past the watermark of one of those views is sought back to it, and its records here dropped.
        Every store is read before anything changes, so a failed read can simply be retried."""
        projectors = await self._written()
        if projectors != self._projectors:
            if self._projectors:
                log.info("the generations written changed: checking every partition against their watermarks")
            self._projectors = projectors
            self._unchecked.update(p.partition for p in self._consumer.assignment())
        next_offsets = self._next_offsets(records)
        applied = {p: min([await view.context.applied_offset(p) for view in projectors]) for p in next_offsets}
        self._unchecked.difference_update(next_offsets)
        behind = {p for p, next_offset in next_offsets.items() if next_offset > applied[p] + 1}
        for partition in behind:
            log.info(
                "partition %d: going back from offset %d to %d",
                partition,
                next_offsets[partition],
                applied[partition] + 1,
            )
            self._consumer.seek(TopicPartition(self._conversations.name, partition, applied[partition] + 1))
        return projectors, [record for record in records if record.partition() not in behind]

    def _next_offsets(self, records: list[Message]) -> dict[int, int]:
        """Where each unchecked partition goes on from: its first record in the batch, or, with
        none there, the consumer's position (a partition not yet fetched from has none: later)."""
        firsts: dict[int, int] = {}
        for record in records:
            partition, offset = kafka_clients.position(record)
            if partition in self._unchecked:
                firsts.setdefault(partition, offset)
        idle = [TopicPartition(self._conversations.name, p) for p in self._unchecked - firsts.keys()]
        positions = self._consumer.position(idle) if idle else []
        return firsts | {p.partition: p.offset for p in positions if p.offset >= 0}

    async def _dead_letter(self, applied: Applied) -> None:
        await asyncio.gather(
            *(
                send_to_dead_letters(self._producer, self._dead_letters, record, PROCESSOR, reason)
                for record, reason in applied.failed
            )
        )


async def _apply(projectors: list[Projector], batch: list[Message]) -> Applied:
    """Apply the batch to each generation in turn; every one refuses the same records."""
    return [await projector.apply(batch) for projector in projectors][-1]


async def _while_stores_are_down(step: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T | None:
    """The step's result, the step retried with back-off while a store cannot be reached; None if
    stopped first."""
    waits = doubling(RETRY_FIRST_S, RETRY_MAX_S)
    while True:
        try:
            return await step()
        except STORE_UNAVAILABLE as exc:
            wait = next(waits)
            STORE_WAITS.waiting()
            log.warning("store unavailable (%r); retrying in %.1fs", exc, wait)
            if await stopped_within(stop, wait):
                return None


async def serve(stop: asyncio.Event) -> None:
    """Run the projections against the configured stores until `stop` is set."""
    producer = EventProducer()
    consumer = kafka_clients.consumer(GROUP)
    watching = asyncio.create_task(exit_if_wedged(GROUP, GroupCheck(GROUP)))
    try:
        async with generations.connected() as live:
            log.info("projecting %s as consumer group %s", CONVERSATIONS.name, GROUP)
            await Runner(live.written, consumer, producer).run(stop)
    finally:
        watching.cancel()
        consumer.close()  # leaves the group now, so its partitions move on without waiting for a timeout
        producer.close()
    log.info("stopped")


async def exit_if_wedged(
    group_id: str, check: Callable[[], Standing | None], check_every_s: float = CHECK_EVERY_S
) -> None:
    """End the process once it has been out of its consumer group, or in it with records it does
    not read, for the grace period while Kafka answered (`infra.membership`): librdkafka's consumer
    once never rejoined after a frozen broker's return, the process alive and projecting nothing.
    The supervisor restarts it."""
    kafka = settings.kafka
    watchdog = GroupWatchdog(group_id, kafka.membership_grace_s, kafka.stall_grace_s)
    while True:  # a check every few seconds, as a liveness probe's
        if why := watchdog.wedged(await asyncio.to_thread(check)):
            wedged.exit_wedged(why)
            return  # (only a test's recorded exit returns)
        await asyncio.sleep(check_every_s)
