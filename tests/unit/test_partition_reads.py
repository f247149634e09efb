"""Where a partition read starts and ends (`infra.partition_reads.read_bounds`): a broker just
back from a pause answers the offsets lookup with passing errors for a moment, and the chaos
suite's frozen Kafka had a bridge stop on one (UNKNOWN_LEADER_EPOCH) instead of trying again;
a partition whose leader just moved is answered with an error in its entry, no exception, and
the cluster suite's frozen broker had a lookup take it for a partition with nothing to read."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from infra.partition_reads import first_offsets_since, read_bounds


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


@dataclass
class Answer:
    """A partition's entry in an offsets lookup's answer, its error set (confluent-kafka's
    TopicPartition will not take one from Python)."""

    topic: str
    partition: int
    offset: int
    error: KafkaError | None


class LeaderMovingAtFirst(LookupsFailingAtFirst):
    """A consumer whose lookups answer a partition's entry with an error, `failures` times."""

    def offsets_for_times(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.lookups += 1
        moving = self.failures > 0
        self.failures -= moving
        error = KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION) if moving else None
        return [Answer(p.topic, p.partition, -1001 if moving else 42, error) for p in partitions]  # type: ignore[misc]


ANSWERS = pytest.mark.parametrize("answering", [LookupsFailingAtFirst, LeaderMovingAtFirst], ids=["raised", "in-entry"])


@ANSWERS
def test_a_lookup_answered_with_a_passing_error_is_tried_again(answering: type[LookupsFailingAtFirst]) -> None:
    consumer = answering(failures=2)

    bounds = read_bounds(consumer, TopicPartition("steno.tokens", 0, 1_000), time.monotonic() + 10)  # type: ignore[arg-type]

    assert bounds == (42, 100)
    assert consumer.lookups == 3


@ANSWERS
def test_an_error_that_lasts_past_the_deadline_is_the_callers(answering: type[LookupsFailingAtFirst]) -> None:
    consumer = answering(failures=1_000_000)
    wanted = [TopicPartition("steno.control", p, 1_000) for p in range(3)]

    with pytest.raises(KafkaException):
        first_offsets_since(consumer, wanted, time.monotonic() + 0.5)  # type: ignore[arg-type]
    assert 1 < consumer.lookups < 10
