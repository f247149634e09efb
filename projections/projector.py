"""One conversation-log record into both views: the step the live runner and replay share, so
that a replay builds exactly the state the live system built."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import cassandra
import redis.exceptions
from cassandra.cluster import NoHostAvailable
from confluent_kafka import Message

from projections import active_context, history
from projections.active_context import ActiveContext
from projections.history import History
from schemas.events import Event
from schemas.serde import decode

# A store that cannot be reached says nothing about the event: wait for the store, don't
# dead-letter the event. Every other failure is the event's (rule 7).
STORE_UNAVAILABLE: tuple[type[Exception], ...] = (
    NoHostAvailable,
    cassandra.OperationTimedOut,
    cassandra.Unavailable,
    cassandra.Timeout,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class NotAConversationEvent(ValueError):
    """A steno event that has no place on the conversation log (a dead letter, say)."""


class Projector:
    def __init__(self, history: History, context: ActiveContext) -> None:
        self.history = history
        self.context = context

    async def apply(self, record: Message) -> None:
        """Decode the record and apply it: history first, then the context cache and its watermark.

        That order means a watermark never covers an event the history view lacks, so a reader
        that falls back from the cache to the history view never goes back in time.
        Raises `UndecodableEvent`, `NotAConversationEvent`, or whatever a view raised.
        """
        event = decode(record.value())
        if not isinstance(event, Event):
            raise NotAConversationEvent(f"{event.type} does not belong on the conversation log")
        await self.history.apply(event)
        await self.context.apply(event, record.partition(), record.offset())


def lanes(records: list[Message]) -> list[list[Message]]:
    """The records grouped by partition, each group in log order.

    Partitions are independent, so their groups can be applied concurrently; within one, the
    context cache's watermark needs the log order.
    """
    grouped: dict[tuple[str, int], list[Message]] = {}
    for record in records:
        grouped.setdefault((record.topic(), record.partition()), []).append(record)
    return list(grouped.values())


@asynccontextmanager
async def connected() -> AsyncIterator[Projector]:
    """A projector on the configured Cassandra and Redis, closed on exit."""
    session = history.connect()
    client = active_context.connect()
    try:
        yield Projector(History(session), ActiveContext(client))
    finally:
        await client.aclose()
        session.cluster.shutdown()
