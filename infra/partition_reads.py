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
from collections.abc import Generator

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from infra.kafka_clients import next_batch, position
from infra.settings import settings

READ_TIMEOUT_S = 10.0
LOOKUP_RETRY_S = 0.2  # between tries at the partition's offsets, while Kafka answers with an error


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
    """The offset of the first record at or after `since`'s time, and the partition's end.

    A broker just back from a pause or a restart answers the lookup with passing errors for a
    moment (its leader epochs catching up: UNKNOWN_LEADER_EPOCH), so the lookup is tried again
    until the deadline; only then is the error the caller's."""
    while True:
        left_s = max(deadline - time.monotonic(), 0.1)
        try:
            [start] = consumer.offsets_for_times([since], timeout=left_s)
            _, end = consumer.get_watermark_offsets(TopicPartition(since.topic, since.partition), timeout=left_s)
            return start.offset, end
        except KafkaException:
            if time.monotonic() + LOOKUP_RETRY_S >= deadline:
                raise
            time.sleep(LOOKUP_RETRY_S)
