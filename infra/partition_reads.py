"""One partition of the log read from a time to its end, for a lookup of what the log holds now.

A response's or a conversation's events all sit in one partition and were all written after
their id was minted (or after some known moment), so a lookup need not read the partition from
its start: Kafka finds the first record at or after a time (`offsets_for_times`), and the read
stops at the end offset taken before it began, so records written meanwhile cannot keep it going.
Each read makes its own consumer, without a group's assignment or commits: these lookups are
rare (a late joiner, a bridge taking over a reply, a test) and must not disturb any group.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import TypeVar

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from infra.kafka_clients import next_batch, position
from infra.settings import settings

READ_TIMEOUT_S = 10.0
LOOKUP_RETRY_S = 0.2  # between tries at the partition's offsets, while Kafka answers with an error

T = TypeVar("T")


class PartitionReadIncomplete(TimeoutError):
    """The partition could not be read up to its end in time: what was read is not all of it."""


def records_since(
    topic: str, partition: int, since_ms: int, reader: str, timeout_s: float = READ_TIMEOUT_S
) -> Generator[Message, None, None]:
    """Blocking: the partition's records from the first written at or after `since_ms` up to its
    end as it stood when the read began; records the client reports as errors are skipped.

    `reader` names the lookup to the broker (its group id, never joined or committed to). Raises
    PartitionReadIncomplete when the end is not reached within `timeout_s` (Kafka restarting),
    KafkaException when the partition's offsets cannot be looked up in that time. A caller that
    has found what it wants may stop early: the consumer is closed when the iterator is.
    """
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": reader, "enable.auto.commit": False}
    )
    try:
        deadline = time.monotonic() + timeout_s
        start, end = read_bounds(consumer, TopicPartition(topic, partition, since_ms), deadline)
        if start < 0 or start >= end:
            return  # nothing written since then
        consumer.assign([TopicPartition(topic, partition, start)])
        reached = start
        while reached < end:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise PartitionReadIncomplete(
                    f"{topic}[{partition}] read up to offset {reached} of {end} in {timeout_s:.0f}s: is Kafka up?"
                )
            for message in next_batch(consumer, timeout_s=min(left_s, 1.0)):
                if message.error():
                    continue
                offset = position(message)[1]
                if offset >= end:
                    return  # written after the read began
                reached = offset + 1
                yield message
    finally:
        consumer.close()


def read_bounds(consumer: Consumer, since: TopicPartition, deadline: float) -> tuple[int, int]:
    """The offset of the first record at or after `since`'s time (-1: none), and the partition's
    end; each lookup tried again until the deadline as `first_offsets_since` says."""
    [start] = first_offsets_since(consumer, [since], deadline)
    end = _retried(lambda left_s: consumer.get_watermark_offsets(_at_end(since), timeout=left_s)[1], deadline)
    return start.offset, end


def first_offsets_since(consumer: Consumer, wanted: list[TopicPartition], deadline: float) -> list[TopicPartition]:
    """Each partition's first record at or after the time in its `offset` (ms): its offset, or -1
    where there is none.

    Kafka answers the lookup partition by partition: a partition whose leader just moved (a
    broker back from a pause, its preferred leader elected again) comes back with an error and
    no offset instead of an exception, and taking that for "nothing since then" skipped the
    partition's records. Such errors, and the passing ones a broker just back raises (its leader
    epochs catching up: UNKNOWN_LEADER_EPOCH), are tried again until the deadline; only then are
    they the caller's (KafkaException)."""
    return _retried(lambda left_s: _answered(consumer.offsets_for_times(wanted, timeout=left_s)), deadline)


def _answered(found: list[TopicPartition]) -> list[TopicPartition]:
    for partition in found:
        if partition.error is not None:
            raise KafkaException(partition.error)
    return found


def _at_end(since: TopicPartition) -> TopicPartition:
    return TopicPartition(since.topic, since.partition)


def _retried(lookup: Callable[[float], T], deadline: float) -> T:
    """`lookup(seconds left)`, again after a KafkaException while the deadline allows."""
    while True:
        left_s = max(deadline - time.monotonic(), 0.1)
        try:
            return lookup(left_s)
        except KafkaException:
            if time.monotonic() + LOOKUP_RETRY_S >= deadline:
                raise
            time.sleep(LOOKUP_RETRY_S)
