"""One step of the pipeline applied to one log record, with steno's delivery rules.

Rule 2: `process` returns only once Kafka has acknowledged every event the step emitted, and
the Faust agent asks for the next record only after that, so Faust's offset commit (of records
the agent has moved past) never precedes their effects. A crash in between redelivers the
record: consumers downstream are idempotent by message and response id.

Rule 7: a record that does not decode, or that the step fails on, becomes a DeadLetter and the
step moves on, so one poison pill never stalls its partition. Failing to write to Kafka is not
the record's fault, so it is not dead-lettered: it propagates and the record is redelivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from infra.kafka_clients import EventProducer
from schemas.events import AnyEvent, DeadLetter, Event
from schemas.serde import decode
from schemas.topics import Topic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """A consumed record, and where in the log it was."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Emit:
    """An event a step produces, on its conversation's partition of `topic`."""

    topic: Topic
    event: Event | DeadLetter
    key: str | None = None  # None: the event's conversation_id


class Step(Protocol):
    name: str  # the processor named in dead letters

    async def handle(self, event: AnyEvent, record: Record) -> Sequence[Emit]:
        """The events to emit for one input; events the step does not act on give none."""
        ...


class Processor:
    def __init__(self, step: Step, producer: EventProducer, dead_letters: Topic) -> None:
        self._step = step
        self._producer = producer
        self._dead_letters = dead_letters

    async def process(self, record: Record) -> None:
        try:
            emits = await self._step.handle(decode(record.value), record)
        except Exception as exc:  # rule 7: whatever the step's failure, the partition moves on
            log.exception("%s: dead-lettering %s[%d]@%d", self._step.name, record.topic, record.partition, record.offset)
            emits = [self._dead_letter(record, f"{type(exc).__name__}: {exc}")]
        await asyncio.gather(*(self._producer.send(emit.topic, emit.event, emit.key) for emit in emits))

    def _dead_letter(self, record: Record, reason: str) -> Emit:
        letter = DeadLetter(
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            processor=self._step.name,
            reason=reason,
            payload=(record.value or b"").decode(errors="replace"),
        )
        return Emit(self._dead_letters, letter, key=(record.key or b"").decode(errors="replace"))
