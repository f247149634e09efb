"""The processor's delivery rules: what it returns resolves only once its effects are
acknowledged, dead letters for records it cannot handle, retries (not dead letters) while a store
is unreachable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from cassandra.cluster import NoHostAvailable
from confluent_kafka import KafkaError, KafkaException

from infra.kafka_clients import Record
from schemas.events import (
    AnyEvent,
    ConversationStarted,
    DeadLetter,
    Event,
    MessageSubmitted,
    ResponseEnded,
    ResponseFailed,
)
from schemas.serde import encode
from schemas.topics import CONVERSATIONS, DEAD_LETTERS, TOKENS, Topic
from stream_processors.conversation_positions import Earlier
from stream_processors.processor import Emit, Outputs, Processor

OUTPUTS = Outputs(DEAD_LETTERS, CONVERSATIONS, TOKENS)

SUBMITTED = MessageSubmitted(
    conversation_id="c1", user_id="u1", message_id="m1", response_id="r1", content="hi", model="scripted"
)


def record(value: bytes | None, key: bytes | None = b"c1") -> Record:
    return Record(topic="steno.conversations", partition=3, offset=41, key=key, value=value)


class Producer:
    """Records each send; its futures resolve only when `ack` is called, like a broker's ack."""

    def __init__(self) -> None:
        self.sent: list[tuple[Topic, Event | DeadLetter, str | None]] = []
        self.pending: list[asyncio.Future[None]] = []
        self.sending = asyncio.Event()  # set on each send

    def send(self, topic: Topic, event: Event | DeadLetter, key: str | None = None) -> asyncio.Future[None]:
        self.sent.append((topic, event, key))
        self.pending.append(asyncio.get_running_loop().create_future())
        self.sending.set()
        return self.pending[-1]

    def ack(self) -> None:
        for future in self.pending:
            if not future.done():
                future.set_result(None)


class EndsResponses:
    """A step that answers every MessageSubmitted with a ResponseEnded, after `failures` errors."""

    name = "test-step"
    acts_on: tuple[type[Event], ...] = (MessageSubmitted,)

    def __init__(self, *failures: Exception) -> None:
        self._failures = list(failures)

    async def handle(self, event: AnyEvent, record: Record, earlier: Earlier) -> AsyncGenerator[Emit, None]:
        if self._failures:
            raise self._failures.pop(0)
        if isinstance(event, MessageSubmitted):
            yield Emit(TOKENS, ended(event))


def ended(event: MessageSubmitted) -> ResponseEnded:
    return ResponseEnded(conversation_id="c1", user_id="u1", response_id=event.response_id, outcome="completed")


async def process(step: EndsResponses, rec: Record) -> Producer:
    """Run the processor on one record; its sends are acknowledged once it has made them all."""
    producer = Producer()
    delivered = await asyncio.wait_for(Processor(step, producer, OUTPUTS).process(rec), timeout=10)
    await asyncio.sleep(0)
    if producer.sent:
        assert not delivered.done(), "resolved before Kafka acknowledged its events"
    producer.ack()
    await asyncio.wait_for(delivered, timeout=10)
    return producer


async def test_emits_the_steps_events_and_returns_only_after_their_ack() -> None:
    producer = await process(EndsResponses(), record(encode(SUBMITTED)))

    [(topic, event, key)] = producer.sent
    assert (topic, type(event), key) == (TOKENS, ResponseEnded, None)


async def test_an_undecodable_record_is_dead_lettered_with_its_position() -> None:
    producer = await process(EndsResponses(), record(b"\xffnot json", key=b"c9"))

    [(topic, letter, key)] = producer.sent
    assert (topic, key) == (DEAD_LETTERS, "c9")
    assert isinstance(letter, DeadLetter)
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("steno.conversations", 3, 41)
    assert (letter.processor, letter.payload) == ("test-step", "\ufffdnot json")
    assert letter.reason.startswith("UndecodableEvent")


async def test_a_failing_step_is_dead_lettered_and_its_response_fails_visibly() -> None:
    failed = await process(EndsResponses(ValueError("boom")), record(encode(SUBMITTED)))
    tombstone = await process(EndsResponses(), record(None, key=None))

    [(letter_at, letter, letter_key), (history_at, failure, _), (ending_at, ending, _)] = failed.sent
    assert isinstance(letter, DeadLetter) and isinstance(failure, ResponseFailed) and isinstance(ending, ResponseEnded)
    assert (letter_at, letter.reason, letter_key) == (DEAD_LETTERS, "ValueError: boom", "c1")
    assert (history_at, failure.response_id) == (CONVERSATIONS, "r1")
    assert (ending_at, ending.outcome) == (TOKENS, "failed") and "boom" in ending.detail
    [(tombstone_at, nothing, tombstone_key)] = tombstone.sent
    assert isinstance(nothing, DeadLetter) and (tombstone_at, nothing.payload, tombstone_key) == (DEAD_LETTERS, "", "")


async def test_an_unreachable_store_is_retried_not_dead_lettered() -> None:
    step = EndsResponses(NoHostAvailable("cassandra down", {}), NoHostAvailable("still down", {}))

    producer = await process(step, record(encode(SUBMITTED)))

    assert [type(event) for _, event, _ in producer.sent] == [ResponseEnded]


async def test_events_the_step_ignores_produce_nothing() -> None:
    ended: Any = ResponseEnded(conversation_id="c1", user_id="u1", response_id="r1", outcome="completed")

    producer = await process(EndsResponses(), record(encode(ended)))

    assert producer.sent == []


async def test_a_valid_event_of_a_type_the_step_does_not_act_on_is_not_even_decoded() -> None:
    started = ConversationStarted(conversation_id="c1", user_id="u1")
    step = EndsResponses(ValueError("handle was called"))  # it would be dead-lettered if handled

    producer = await process(step, record(encode(started)))

    assert producer.sent == []


async def test_a_record_of_an_unknown_type_is_still_dead_lettered() -> None:
    unknown = encode(SUBMITTED).replace(b'"MessageSubmitted"', b'"NoSuchEvent"')

    producer = await process(EndsResponses(), record(unknown))

    assert [type(event) for _, event, _ in producer.sent] == [DeadLetter]


class RefusingProducer(Producer):
    """Refuses to queue what it is given, as librdkafka does a record for a partition it lacks."""

    def send(self, topic: Topic, event: Event | DeadLetter, key: str | None = None) -> asyncio.Future[None]:
        raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))


async def test_a_send_refused_outright_fails_what_process_returns_like_a_failed_delivery() -> None:
    delivered = await Processor(EndsResponses(), RefusingProducer(), OUTPUTS).process(record(encode(SUBMITTED)))

    with pytest.raises(KafkaException):
        await asyncio.wait_for(delivered, timeout=10)


class EndsTwice(EndsResponses):
    """Ends the response on two topics, the second only after the first is acknowledged."""

    async def handle(self, event: AnyEvent, record: Record, earlier: Earlier) -> AsyncGenerator[Emit, None]:
        assert isinstance(event, MessageSubmitted)
        yield Emit(CONVERSATIONS, ended(event))
        yield Emit(TOKENS, ended(event), after_acks=True)


class FailsAfterAnEvent(EndsResponses):
    """Emits an event, then fails."""

    async def handle(self, event: AnyEvent, record: Record, earlier: Earlier) -> AsyncGenerator[Emit, None]:
        assert isinstance(event, MessageSubmitted)
        yield Emit(CONVERSATIONS, ended(event))
        raise ValueError("failed midway")


async def test_an_event_after_acks_waits_for_the_acknowledgement_of_those_before_it() -> None:
    producer = Producer()
    processing = asyncio.create_task(Processor(EndsTwice(), producer, OUTPUTS).process(record(encode(SUBMITTED))))
    await asyncio.wait_for(producer.sending.wait(), timeout=10)
    for _ in range(10):  # it would have sent the second by now, had it not waited
        await asyncio.sleep(0)

    assert [topic for topic, _, _ in producer.sent] == [CONVERSATIONS] and not processing.done()
    producer.ack()
    delivered = await asyncio.wait_for(processing, timeout=10)
    assert [topic for topic, _, _ in producer.sent] == [CONVERSATIONS, TOKENS] and not delivered.done()
    producer.ack()
    await asyncio.wait_for(delivered, timeout=10)


async def test_an_undelivered_event_before_the_barrier_fails_what_process_returns() -> None:
    producer = Producer()
    processing = asyncio.create_task(Processor(EndsTwice(), producer, OUTPUTS).process(record(encode(SUBMITTED))))
    await asyncio.wait_for(producer.sending.wait(), timeout=10)
    producer.pending[0].set_exception(KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT)))

    delivered = await asyncio.wait_for(processing, timeout=10)
    with pytest.raises(KafkaException):
        await asyncio.wait_for(delivered, timeout=10)
    assert [topic for topic, _, _ in producer.sent] == [CONVERSATIONS]


async def test_a_step_failing_after_an_event_keeps_it_and_dead_letters_the_record() -> None:
    producer = await process(FailsAfterAnEvent(), record(encode(SUBMITTED)))

    assert [(topic, type(event)) for topic, event, _ in producer.sent] == [
        (CONVERSATIONS, ResponseEnded),
        (DEAD_LETTERS, DeadLetter),
        (CONVERSATIONS, ResponseFailed),
        (TOKENS, ResponseEnded),
    ]
