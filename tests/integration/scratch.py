"""Scratch copies of steno's topics, for the tests and benchmarks that produce to Kafka.

The stack's own processes consume the real topics: an event a test wrote there would be moderated,
answered and projected by them, and would stay in the real history (the conversation log is kept
forever). A copy with the same partition count puts each conversation on the same partition as
the real topic would, so the code under test cannot tell the difference.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from infra import kafka
from infra.settings import settings
from projections.consuming import forget_committed_offsets
from schemas.topics import Topic

READY_S = 20.0


@contextmanager
def scratch_group(label: str) -> Iterator[str]:
    """A consumer group of its own for one test; its committed offsets are forgotten afterwards."""
    group = f"test-{label}-{uuid.uuid4().hex[:8]}"
    yield group
    forget_committed_offsets(group)


@contextmanager
def scratch_copies(label: str, topics: Sequence[Topic]) -> Iterator[list[Topic]]:
    """Fresh copies of `topics`, in the same order, served by the broker; deleted afterwards.

    The names carry `label` (what the copies are for) and a unique suffix, so concurrent runs
    and leftovers of a killed run never share a topic.
    """
    if not kafka.healthy():
        raise RuntimeError(f"no Kafka broker at {settings.kafka.bootstrap}: start the stack with `make up`")
    run = f"{label}-{uuid.uuid4().hex[:8]}"
    copies = [replace(topic, name=f"test.{run}.{topic.name}") for topic in topics]
    kafka.ensure_topics({t.name: t.partitions for t in copies}, {t.name: t.config for t in copies})
    try:
        _wait_until_served(copies)
        yield copies
    finally:
        _delete(copies)


def _wait_until_served(topics: list[Topic]) -> None:
    """Return once every partition has a leader: a new one answers no queries until then."""
    client = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": "steno-tests"})
    deadline = time.monotonic() + READY_S
    try:
        for topic, partition in ((t, p) for t in topics for p in range(t.partitions)):
            while True:
                try:
                    client.get_watermark_offsets(TopicPartition(topic.name, partition), timeout=READY_S)
                    break
                except KafkaException:
                    assert time.monotonic() < deadline, f"{topic.name}[{partition}] has no leader"
    finally:
        client.close()


def _delete(topics: list[Topic]) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})  # must outlive its futures
    for done in admin.delete_topics([topic.name for topic in topics]).values():
        done.result(timeout=30)
