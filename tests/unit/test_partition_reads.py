"""Where a partition read starts and ends (`infra.partition_reads.read_bounds`): a broker just
back from a pause answers the offsets lookup with passing errors for a moment, and the chaos
suite's frozen Kafka had a bridge stop on one (UNKNOWN_LEADER_EPOCH) instead of trying again."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from infra.partition_reads import read_bounds


class LookupsFailingAtFirst:
    """A consumer whose offsets lookups fail as a broker just back answers them, `failures` times."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.lookups = 0

    def offsets_for_times(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.lookups += 1
        if self.failures > 0:
            self.failures -= 1
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_LEADER_EPOCH))
        return [TopicPartition(p.topic, p.partition, 42) for p in partitions]

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        return 0, 100


def test_a_lookup_answered_with_a_passing_error_is_tried_again() -> None:
    consumer = LookupsFailingAtFirst(failures=2)

    bounds = read_bounds(consumer, TopicPartition("steno.tokens", 0, 1_000), time.monotonic() + 10)  # type: ignore[arg-type]

    assert bounds == (42, 100)
    assert consumer.lookups == 3


def test_an_error_that_lasts_past_the_deadline_is_the_callers() -> None:
    consumer = LookupsFailingAtFirst(failures=1_000_000)

    with pytest.raises(KafkaException):
        read_bounds(consumer, TopicPartition("steno.tokens", 0, 1_000), time.monotonic() + 0.5)  # type: ignore[arg-type]
    assert 1 < consumer.lookups < 10
