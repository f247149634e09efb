"""Faust (faust-streaming over aiokafka) works against the local Kafka 4 broker: an agent
consumes one topic and produces to another, end to end.

Needs the broker that `make up` starts. The worker runs in-process, in the test's event loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import faust
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from infra import kafka
from infra.settings import settings
from tests.integration.log_io import values

pytestmark = pytest.mark.integration


@pytest.fixture
def run_id() -> Iterator[str]:
    """A fresh id for this test's app and topics, which are deleted afterwards."""
    if not kafka.healthy():
        pytest.fail(f"no Kafka broker at {settings.kafka.bootstrap}: start the stack with `make up`")
    run = uuid.uuid4().hex[:12]
    yield run
    delete_topics(f"test.faust.{run}.in", f"test.faust.{run}.out", f"test-faust-{run}-__assignor-__leader")


async def test_agent_round_trip(run_id: str, tmp_path: Path) -> None:
    source, sink = f"test.faust.{run_id}.in", f"test.faust.{run_id}.out"
    kafka.ensure_topics({source: 2, sink: 2})
    app = upper_casing_app(f"test-faust-{run_id}", source, sink, tmp_path)
    results = sink_consumer(sink)
    sent = [f"hello {i}" for i in range(5)]

    await app.start()
    try:
        for i, text in enumerate(sent):
            await app.topic(source).send(key=f"conversation-{i}".encode(), value=text.encode())
        received = [value.decode() for value in await asyncio.to_thread(values, results, len(sent), 90.0)]
    finally:
        await app.stop()  # drains the stream, then commits the source offsets
        results.close()

    assert sorted(received) == sorted(text.upper() for text in sent)
    assert committed_count(app.conf.id, source, partitions=2) == len(sent)


def upper_casing_app(app_id: str, source: str, sink: str, data_dir: Path) -> faust.App:
    """The smallest agent with both a consuming and a producing side."""
    app = faust.App(
        app_id,
        broker=f"kafka://{settings.kafka.bootstrap}",
        store="memory://",
        web_enabled=False,
        datadir=data_dir,
        consumer_auto_offset_reset="earliest",  # records sent before assignment still count
        producer_acks=-1,
    )
    inbound = app.topic(source, value_serializer="raw", key_serializer="raw")
    outbound = app.topic(sink, value_serializer="raw", key_serializer="raw")

    @app.agent(inbound)
    async def upper(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await outbound.send(key=event.key, value=event.value.upper())

    return app


def committed_count(group: str, topic: str, partitions: int) -> int:
    """How many of the topic's records the group has committed, over all partitions."""
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": group})
    try:
        offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)  # -1001: nothing committed


def delete_topics(*names: str) -> None:
    """Clean up; a topic that was never created (the app failed early) is not a second error."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})  # must outlive its futures
    for done in admin.delete_topics(list(names)).values():
        try:
            done.result(timeout=30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


def sink_consumer(topic: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"{topic}.reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    return consumer
