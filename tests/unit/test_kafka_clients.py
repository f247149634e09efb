"""The Kafka client helpers every component shares."""

import pytest

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
