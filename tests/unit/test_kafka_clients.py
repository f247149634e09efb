"""The Kafka client helpers every component shares."""

import asyncio

import pytest
from confluent_kafka import KafkaException

from infra.kafka_clients import EventProducer, Record, dead_letter
from schemas.topics import DEAD_LETTERS


async def test_a_dead_letter_sent_without_its_records_key_is_refused_saying_which_key() -> None:
    producer = EventProducer()  # librdkafka connects lazily: no broker needed to refuse
    letter = dead_letter(Record("steno.conversations", 0, 7, b"c1", b"{not json"), "test", "ValueError: boom")
    try:
        with pytest.raises(ValueError, match="pass that record's key"):
            producer.send(DEAD_LETTERS, letter)
    finally:
        producer.close(timeout_s=0)


async def test_a_send_from_a_loop_closed_since_does_not_stop_later_acknowledgements() -> None:
    """The delivery thread serves every sender of a process: a callback for a loop that has
    closed (a shutdown, an ended test) must not end it, or later sends wait for ever."""
    unreachable = {"bootstrap.servers": "127.0.0.1:9", "delivery.timeout.ms": 300}  # each send fails in 0.3 s
    producer = EventProducer(**unreachable)
    letter = dead_letter(Record("steno.conversations", 0, 7, b"c1", b"{not json"), "test", "ValueError: boom")

    async def send_and_leave() -> None:
        producer.send(DEAD_LETTERS, letter, key="c1")  # its loop is closed before the send fails

    try:
        await asyncio.to_thread(asyncio.run, send_and_leave())
        later = producer.send(DEAD_LETTERS, letter, key="c1")
        with pytest.raises(KafkaException):  # answered (timed out), not left waiting
            await asyncio.wait_for(later, timeout=10)
    finally:
        producer.close(timeout_s=0)
