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

from confluent_kafka import Consumer, Message, TopicPartition

from infra.kafka_clients import next_batch, position
from infra.settings import settings

READ_TIMEOUT_S = 10.0


class PartitionReadIncomplete(TimeoutError):
    """The partition could not be read up to its end in time: what was read is not all of it."""


def records_since(
    topic: str, partition: int, since_ms: int, reader: str, timeout_s: float = READ_TIMEOUT_S
) -> Generator[Message, None, None]:
    """Blocking: the partition's records from the first written at or after `since_ms` up to its
    end as it stood when the read began; records the client reports as errors are skipped.

    `reader` names the lookup to the broker (its group id, never joined or committed to). Raises
    PartitionReadIncomplete when the end is not reached within `timeout_s` (Kafka restarting),
    KafkaException when the partition's offsets cannot be looked up. A caller that has found what
    it wants may stop early: the consumer is closed when the iterator is.
    """
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap, "group.id": reader, "enable.auto.commit": False}
    )
    try:
        deadline = time.monotonic() + timeout_s
        [start] = consumer.offsets_for_times([TopicPartition(topic, partition, since_ms)], timeout=timeout_s)
        _, end = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
        if start.offset < 0 or start.offset >= end:
            return  # nothing written since then
        consumer.assign([TopicPartition(topic, partition, start.offset)])
        reached = start.offset
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
