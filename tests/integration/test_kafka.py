"""The local Kafka broker does what steno relies on: explicit topics, idempotent producers,
and consumer groups that resume from their committed offsets.

Needs the broker that `make up` starts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from infra import kafka
from infra.settings import settings
from projections.consuming import forget_committed_offsets
from tests.integration.log_io import values

pytestmark = pytest.mark.integration

BOOTSTRAP = settings.kafka.bootstrap
PARTITIONS = 3


@pytest.fixture(scope="module", autouse=True)
def broker() -> None:
    if not kafka.healthy():
        pytest.fail(f"no Kafka broker at {BOOTSTRAP}: start the stack with `make up`")


@pytest.fixture
def topic() -> Iterator[str]:
    """A unique topic with PARTITIONS partitions, deleted afterwards."""
    name = f"test.kafka.{uuid.uuid4().hex[:12]}"
    kafka.ensure_topics({name: PARTITIONS}, {name: {"retention.ms": "-1"}})
    yield name
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})  # must outlive its futures
    for done in admin.delete_topics([name]).values():
        done.result(timeout=30)


def test_ensure_topics_creates_with_explicit_partitions_and_is_idempotent(topic: str) -> None:
    kafka.ensure_topics({topic: PARTITIONS})  # second call: no error, no change

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == PARTITIONS
    resource = ConfigResource("topic", topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].value == "-1"  # the topic config given at creation


def test_ensure_topics_refuses_a_changed_partition_count(topic: str) -> None:
    with pytest.raises(RuntimeError, match="partitions"):
        kafka.ensure_topics({topic: PARTITIONS + 1})


def test_auto_topic_creation_is_off() -> None:
    """A misspelt topic name must fail the producer, not quietly create a new topic."""
    name = f"test.kafka.absent.{uuid.uuid4().hex[:12]}"
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "message.timeout.ms": 1500})
    errors: list[KafkaError | None] = []
    producer.produce(name, b"x", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(10)

    assert len(errors) == 1 and errors[0] is not None
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    assert name not in admin.list_topics(timeout=10).topics


def test_group_resumes_from_committed_offset(topic: str) -> None:
    group = f"test-group-{uuid.uuid4().hex[:12]}"
    first = [f"first-{i}".encode() for i in range(9)]
    second = [f"second-{i}".encode() for i in range(9)]

    produce(topic, first)
    consumer = group_consumer(group, topic)
    assert sorted(values(consumer, len(first), timeout_s=60)) == sorted(first)
    consumer.commit(asynchronous=False)
    committed = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
    assert sum(max(tp.offset, 0) for tp in committed) == len(first)  # -1001: none yet
    consumer.close()

    produce(topic, second)
    resumed = group_consumer(group, topic)
    try:
        # Within a partition every `first` message precedes every `second` one, so once all of
        # `second` has arrived, any re-delivery of `first` would have arrived too.
        assert sorted(values(resumed, len(second), timeout_s=60)) == sorted(second)
    finally:
        resumed.close()


def test_forgetting_a_group_the_broker_no_longer_holds_is_no_error() -> None:
    """Kafka drops a group left empty with no committed offsets on its own, so a group may be gone
    before anyone deletes it (a CI run's clean-up once found it so): that is the state asked for."""
    group = f"test-group-never-joined-{uuid.uuid4().hex[:12]}"

    forget_committed_offsets(group)

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
    assert group not in {g.group_id for g in listed.valid}


def produce(topic: str, values: list[bytes]) -> None:
    """Produce the way steno's services do: idempotent, acknowledged by all in-sync replicas."""
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True, "acks": "all"})
    errors: list[KafkaError | None] = []
    for i, value in enumerate(values):
        producer.produce(
            topic, value, key=f"conversation-{i}".encode(), on_delivery=lambda err, _msg: errors.append(err)
        )
    assert producer.flush(30) == 0, "messages still undelivered after 30s"
    assert errors == [None] * len(values)


def group_consumer(group: str, topic: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    return consumer
