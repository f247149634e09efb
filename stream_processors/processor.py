"""One step of the pipeline applied to one log record, with steno's delivery rules.

Rule 2: `process` sends the events the step emitted, in order, and returns a future that
resolves once Kafka has acknowledged every one of them; the agent acks the record (which lets
Faust commit its offset) only then (`stream_processors.delivery_window`). A crash in between
redelivers the record: consumers downstream are idempotent by message and response id. A step
yields its events as it decides them, so the first is on its way to Kafka while the step works out
the next; one that must not land before those ahead of it (on other partitions, Kafka orders
nothing) is marked `after_acks` and sent once they are acknowledged.

Rule 7: a record that does not decode, or that the step fails on, becomes a DeadLetter and the
step moves on, so one poison pill never stalls its partition. When the record was a user's
message, its response also fails visibly (ResponseFailed in history, an `error` on the token
stream): nobody is left waiting for a reply that will never come. A store that cannot be reached
says nothing about the record, so the step is retried until the store is back instead (as the
projections runner does), and a failure to write to Kafka fails the returned future: the record is
never acked, and is redelivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

from infra.backoff import doubling
from infra.kafka_clients import Record, dead_letter
from infra.store_errors import STORE_UNAVAILABLE, STORE_WAITS
from schemas.events import (
    AnyEvent,
    DeadLetter,
    Event,
    MessageAccepted,
    MessageSubmitted,
    ResponseEnded,
    ResponseFailed,
    event_classes,
)
from schemas.serde import decode, event_type
from schemas.topics import Topic
from stream_processors.conversation_positions import ConversationPositions, Earlier

RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Emit:
    """An event a step produces, on its conversation's partition of `topic`."""

    topic: Topic
    event: Event | DeadLetter
    key: str | None = None  # None: the event's conversation_id
    after_acks: bool = False  # sent only once Kafka has acknowledged every event emitted before it


class Step(Protocol):
    name: str  # the processor named in dead letters
    acts_on: tuple[type[Event], ...]  # the event types `handle` emits anything for

    def handle(self, event: AnyEvent, record: Record, earlier: Earlier) -> AsyncGenerator[Emit, None]:
        """The events to emit for one input, in order; events the step does not act on give none.
        `earlier` is what the processor read of the event's conversation before it.
        Retried from the start while a store is unreachable: what it yielded before is sent again."""
        ...


class Sender(Protocol):
    """`infra.kafka_clients.EventProducer`: the returned future resolves on the broker's ack."""

    def send(self, topic: Topic, event: Event | DeadLetter, key: str | None = None) -> Awaitable[Any]: ...


@dataclass(frozen=True)
class Outputs:
    """Where a processor reports what it could not do."""

    dead_letters: Topic
    conversations: Topic
    tokens: Topic


class Processor:
    def __init__(self, step: Step, producer: Sender, outputs: Outputs) -> None:
        self._step = step
        self._producer = producer
        self._outputs = outputs
        self._positions = ConversationPositions()
        self._ignored = {cls.model_fields["type"].default for cls in event_classes()} - {
            cls.model_fields["type"].default for cls in step.acts_on
        }

    @property
    def name(self) -> str:
        return self._step.name

    async def process(self, record: Record) -> asyncio.Future[list[Any]]:
        """Handle the record and send its events; the result resolves on Kafka's acks of them all.
        Every record of a partition comes here, in order (the conversation positions count on it)."""
        kind = event_type(record.value)
        earlier = self._positions.observe(record, kind)
        if kind in self._ignored:
            return asyncio.gather()  # a valid event of a type the step does nothing with: not worth validating
        sent: list[Awaitable[Any]] = []
        try:
            async with aclosing(self._outcome(record, earlier)) as emits:
                async for emit in emits:
                    if emit.after_acks:
                        await asyncio.gather(*sent)
                    sent.append(self._producer.send(emit.topic, emit.event, emit.key))
        except Exception as exc:  # refused before it was queued (an unknown partition, a full queue), or not delivered
            failed: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed  # failed like a delivery: the record is never acked
        return asyncio.gather(*sent)

    async def _outcome(self, record: Record, earlier: Earlier) -> AsyncGenerator[Emit, None]:
        """The step's events for the record, then its dead letter if the step failed."""
        waits = doubling(RETRY_FIRST_S, RETRY_MAX_S)
        event: AnyEvent | None = None
        while True:
            try:
                event = decode(record.value)
                async with aclosing(self._step.handle(event, record, earlier)) as emits:
                    async for emit in emits:
                        yield emit
                return
            except STORE_UNAVAILABLE as exc:
                wait = next(waits)
                STORE_WAITS.waiting()
                log.warning("%s: store unavailable at %s (%r); retrying in %.1fs", self.name, _at(record), exc, wait)
                await asyncio.sleep(wait)
            except Exception as exc:  # rule 7: whatever else failed, the partition moves on
                log.exception("%s: dead-lettering %s", self.name, _at(record))
                reason = f"{type(exc).__name__}: {exc}"
                for emit in [self._dead_letter(record, reason), *self._response_failed(event, reason)]:
                    yield emit
                return

    def _response_failed(self, event: AnyEvent | None, reason: str) -> list[Emit]:
        if not isinstance(event, MessageSubmitted | MessageAccepted):
            return []
        detail = f"steno could not process this message ({self.name}): {reason}"
        failed = ResponseFailed(
            conversation_id=event.conversation_id,
            user_id=event.user_id,
            response_id=event.response_id,
            message_id=event.message_id,
            error=detail,
        )
        ended = ResponseEnded(
            conversation_id=event.conversation_id,
            user_id=event.user_id,
            response_id=event.response_id,
            outcome="failed",
            detail=detail,
        )
        return [Emit(self._outputs.conversations, failed), Emit(self._outputs.tokens, ended)]

    def _dead_letter(self, record: Record, reason: str) -> Emit:
        letter = dead_letter(record, self.name, reason)
        return Emit(self._outputs.dead_letters, letter, key=(record.key or b"").decode(errors="replace"))


def _at(record: Record) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"
