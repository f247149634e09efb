"""The live projections runner: tails the conversation log into the history and context views.

Rule 2: a record's offset is committed only after both views applied it, so a crash means
redelivery, which the views absorb. Rule 7: a record that cannot be decoded or applied goes to the
dead-letter topic with the reason and the partition moves on. A store that is down is different:
the runner retries the same record until the store is back, because skipping it would lose history.
"""

from __future__ import annotations

import asyncio
import logging

from confluent_kafka import Consumer, Message

from infra import kafka_clients
from infra.kafka_clients import EventProducer
from projections.consuming import (
    commit_handled,
    log_partitions,
    position,
    send_to_dead_letters,
    stopped_within,
    valid_records,
)
from projections.projector import STORE_UNAVAILABLE, Projector, connected, lanes
from schemas.topics import CONVERSATIONS, DEAD_LETTERS, Topic

GROUP = "steno-projections"
PROCESSOR = "projections"
BATCH_SIZE = 500
POLL_S = 0.5  # also how long a stop request may wait for the consumer
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0

log = logging.getLogger(__name__)


class Runner:
    """Projects one conversation log, dead-lettering what it cannot apply.

    The topics are parameters so that tests can run it on scratch copies: the stack's own
    processors act on every event of the real log, and the real log is kept forever.
    """

    def __init__(
        self,
        projector: Projector,
        consumer: Consumer,
        producer: EventProducer,
        conversations: Topic = CONVERSATIONS,
        dead_letters: Topic = DEAD_LETTERS,
    ) -> None:
        self._projector = projector
        self._consumer = consumer
        self._producer = producer
        self._conversations = conversations
        self._dead_letters = dead_letters

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, committing each batch after its effects."""
        self._consumer.subscribe(
            [self._conversations.name], on_assign=log_partitions("assigned"), on_revoke=log_partitions("revoked")
        )
        while not stop.is_set():
            records = await asyncio.to_thread(kafka_clients.next_batch, self._consumer, POLL_S, BATCH_SIZE)
            valid = valid_records(records)
            handled = await asyncio.gather(*(self._handle_in_order(lane, stop) for lane in lanes(valid)))
            await commit_handled(self._consumer, [record for lane in handled for record in lane])

    async def _handle_in_order(self, lane: list[Message], stop: asyncio.Event) -> list[Message]:
        """Handle one partition's records in order; returns those handled before any stop."""
        handled: list[Message] = []
        for record in lane:
            if not await self._handle(record, stop):
                break
            handled.append(record)
        return handled

    async def _handle(self, record: Message, stop: asyncio.Event) -> bool:
        """Apply one record, or dead-letter it; False if stopped while waiting for a store."""
        delay = RETRY_FIRST_S
        while True:
            try:
                await self._projector.apply(record)
                return True
            except STORE_UNAVAILABLE as exc:
                log.warning("store unavailable at %s (%r); retrying in %.1fs", position(record), exc, delay)
                if await stopped_within(stop, delay):
                    return False
                delay = min(delay * 2, RETRY_MAX_S)
            except Exception as exc:  # rule 7: whatever the event did, the partition moves on
                reason = f"{type(exc).__name__}: {exc}"
                await send_to_dead_letters(self._producer, self._dead_letters, record, PROCESSOR, reason)
                return True


async def serve(stop: asyncio.Event) -> None:
    """Run the projections against the configured stores until `stop` is set."""
    producer = EventProducer()
    consumer = kafka_clients.consumer(GROUP)
    try:
        async with connected() as projector:
            log.info("projecting %s as consumer group %s", CONVERSATIONS.name, GROUP)
            await Runner(projector, consumer, producer).run(stop)
    finally:
        consumer.close()  # leaves the group now, so its partitions move on without waiting for a timeout
        producer.close()
    log.info("stopped")
