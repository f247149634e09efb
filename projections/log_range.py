"""Which part of the conversation log a replay reads: per partition, a range of offsets.

`--from` and `--to` bound it by offset (the same number in every partition read) or by time
(ISO 8601; Kafka finds each partition's first record at or after that time, `offsets_for_times`).
`--from` is inclusive, `--to` exclusive, and both are clamped to what the log holds.
`--conversation` reads only the partition that holds the conversation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Consumer, TopicPartition

from infra.partition_reads import first_offsets_since
from schemas.topics import Topic, partition_for

KAFKA_TIMEOUT_S = 10.0

Bound = int | datetime
Ranges = dict[int, tuple[int, int]]  # partition -> (first offset, end offset), the end excluded


def parse_bound(text: str) -> Bound:
    """An offset (a whole number) or a time (ISO 8601, UTC unless it names its zone)."""
    if text.isdigit():
        return int(text)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an offset (a whole number) nor an ISO 8601 time (e.g. 2025-06-01T12:00:00Z)"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Scope:
    """The part of the log to replay; the default is all of it, as it stands when replay starts."""

    start: Bound | None = None
    end: Bound | None = None
    conversation: str | None = None

    def __post_init__(self) -> None:
        if _reversed(self.start, self.end):
            raise ValueError(f"--from ({self.start}) is after --to ({self.end}): nothing to replay")

    @property
    def whole_log(self) -> bool:
        return self == Scope()


def _reversed(start: Bound | None, end: Bound | None) -> bool:
    """Whether `start` comes after `end`; an offset and a time are not compared (each is checked
    against the log on its own)."""
    if isinstance(start, int) and isinstance(end, int):
        return start > end
    if isinstance(start, datetime) and isinstance(end, datetime):
        return start > end
    return False


def clamp(offset: int, low: int, high: int) -> int:
    return min(max(offset, low), high)


def ranges(consumer: Consumer, topic: Topic, scope: Scope) -> Ranges:
    """The offsets of the scope in each partition it reads, as the log stands now."""
    partitions = [partition_for(scope.conversation, topic)] if scope.conversation else range(topic.partitions)
    found: Ranges = {}
    for partition in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic.name, partition), timeout=KAFKA_TIMEOUT_S)
        start = low if scope.start is None else _offset(consumer, topic, partition, scope.start, low, high)
        end = high if scope.end is None else _offset(consumer, topic, partition, scope.end, low, high)
        found[partition] = (start, max(start, end))
    return found


def ends_now(consumer: Consumer, topic: Topic, after: Ranges) -> Ranges:
    """From where each partition's earlier range ended to the partition's end now."""
    now: Ranges = {}
    for partition, (_, end) in after.items():
        _, high = consumer.get_watermark_offsets(TopicPartition(topic.name, partition), timeout=KAFKA_TIMEOUT_S)
        now[partition] = (end, max(end, high))
    return now


def _offset(consumer: Consumer, topic: Topic, partition: int, bound: Bound, low: int, high: int) -> int:
    if isinstance(bound, int):
        return clamp(bound, low, high)
    at_ms = int(bound.timestamp() * 1000)
    [first] = first_offsets_since(
        consumer, [TopicPartition(topic.name, partition, at_ms)], time.monotonic() + KAFKA_TIMEOUT_S
    )
    return high if first.offset < 0 else first.offset  # none at or after that time: the end
