"""Rule 2 for the processors when Kafka refuses their events: the record that caused them is never
committed, the app stops, and a restarted app answers the message.

The app runs in-process on scratch topics. Its inference-request topic is declared with more
partitions than the broker has, so context assembly's InferenceRequested for a conversation
that maps past them cannot be produced, exactly as a write Kafka refuses.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import faust
import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.kafka_clients import EventProducer
from infra.settings import settings
from projections import active_context
from projections.active_context import ActiveContext
from schemas.events import ConversationStarted, InferenceRequested, MessageAccepted, MessageSubmitted, new_id
from schemas.topics import Topic, partition_for
from stream_processors.app import Topics, create_app
from tests.integration.processors_harness import LogTail, crash_reason, delete_group, project, scratch_topics

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]

RUN = f"delivery-{uuid.uuid4().hex[:10]}"
GROUP = f"test-{RUN}"


@asynccontextmanager
async def running(topics: Topics) -> AsyncIterator[faust.App]:
    app = create_app(GROUP, topics, cache_namespace=RUN, offset_reset="earliest")
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@asynccontextmanager
async def projected(conversations: Topic) -> AsyncIterator[None]:
    """The scratch log's views kept up to date, so that context assembly finds the turns."""
    stop = asyncio.Event()
    task = asyncio.create_task(project(conversations, RUN, stop))
    try:
        yield
    finally:
        stop.set()
        await task
        client = active_context.connect()
        await ActiveContext(client, settings.context, namespace=RUN).clear()
        await client.aclose()


def unroutable_conversation(requests: Topic, partitions_served: int) -> str:
    """A conversation whose inference requests map to a partition the broker does not have."""
    while partition_for(conversation_id := new_id(), requests) < partitions_served:
        pass
    return conversation_id


def committed_offset(topic: str, partition: int) -> int:
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": GROUP})
    try:
        [position] = consumer.committed([TopicPartition(topic, partition)], timeout=30)
        return position.offset
    finally:
        consumer.close()


async def test_an_undeliverable_event_stops_the_app_uncommitted_and_a_restart_answers_it() -> None:
    with scratch_topics(RUN) as topics:
        requests = topics.inference_requests
        unroutable = replace(requests, partitions=requests.partitions * 16)
        conversation = unroutable_conversation(unroutable, requests.partitions)
        message = MessageSubmitted(
            conversation_id=conversation,
            user_id=f"user-{RUN}",
            message_id=new_id(),
            response_id=new_id(),
            content="hello",
            model="scripted",
        )
        log = LogTail([topics.conversations, requests])
        producer = EventProducer()
        try:
            async with projected(topics.conversations):
                for event in (ConversationStarted(conversation_id=conversation, user_id=message.user_id), message):
                    await producer.send(topics.conversations, event)

                async with running(replace(topics, inference_requests=unroutable)) as app:
                    [accepted] = await log.of(message.response_id, MessageAccepted)
                    reason = await crash_reason(app)
                assert "partition" in str(reason).lower(), reason
                partition = partition_for(conversation, topics.conversations)
                assert committed_offset(topics.conversations.name, partition) <= accepted.offset

                async with running(topics):
                    [request] = await log.of(message.response_id, InferenceRequested)
            assert isinstance(request.event, InferenceRequested)
            assert request.event.prompt[-1].content == "hello"
        finally:
            producer.close()
            log.close()
            delete_group(GROUP)
