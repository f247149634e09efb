"""Rule 2 for the processors when Kafka refuses their events: the record that caused them is never
committed, the app stops, and a restarted app answers the message.

The app runs in-process on scratch topics. Its inference-request topic is declared with more
partitions than the broker has, so context assembly's InferenceRequested for a conversation
that maps past them cannot be produced, exactly as a write Kafka refuses.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import faust
import pytest
from confluent_kafka import Consumer, TopicPartition

from infra import kafka_clients, wedged
from infra.kafka_clients import EventProducer
from infra.settings import settings
from projections import active_context
from projections.active_context import ActiveContext
from projections.consuming import forget_committed_offsets
from schemas.events import ConversationStarted, InferenceRequested, MessageAccepted, MessageSubmitted, new_id
from schemas.topics import Topic, partition_for
from stream_processors.app import Topics, create_app
from tests.integration.processors_harness import LogTail, crash_reason, project, scratch_topics

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(180)]

RUN = f"delivery-{uuid.uuid4().hex[:10]}"
GROUP = f"test-{RUN}"
WEDGED_STOP_S = 2.0  # the crash's stop deadline, short here
STOP_LIMIT_S = 30.0
SLOW_DELIVERY_S = 10.0  # the delivery timeout while a request waits: several of Faust's commits


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


class Exits:
    """What the crash's stop deadline did to the process, recorded instead of done: a test's
    in-process app must not end the test run (`infra.wedged.hard_exit`)."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self._ended = threading.Event()

    def __call__(self, status: int) -> None:
        self.statuses.append(status)
        self._ended.set()

    def ended(self) -> bool:
        return self._ended.is_set()


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> Exits:
    recorded = Exits()
    monkeypatch.setattr(wedged, "hard_exit", recorded)
    monkeypatch.setattr(settings.kafka, "wedged_stop_s", WEDGED_STOP_S)
    return recorded


async def stop_crashed(app: faust.App, exits: Exits) -> bool:
    """Stop a crashed app as its worker does: True once it stopped, False once the deadline
    ended the process first (the app is then abandoned, as the ended process leaves it)."""
    stopping = asyncio.create_task(app.stop())
    deadline = time.monotonic() + STOP_LIMIT_S
    while not stopping.done() and not exits.ended():
        await asyncio.sleep(0.05)
        if time.monotonic() > deadline:
            stopping.cancel()
            raise AssertionError(f"the crashed app neither stopped nor ended within {STOP_LIMIT_S}s")
    if stopping.done():
        await stopping
        return True
    stopping.cancel()
    await asyncio.gather(stopping, return_exceptions=True)
    return False


def undeliverable(topics: Topics) -> tuple[Topics, MessageSubmitted]:
    """The topics with an inference-request topic declared wider than the broker's, and a message
    whose inference request maps past the partitions the broker has."""
    requests = topics.inference_requests
    unroutable = replace(requests, partitions=requests.partitions * 16)
    message = hello(unroutable_conversation(unroutable, requests.partitions))
    return replace(topics, inference_requests=unroutable), message


def hello(conversation_id: str) -> MessageSubmitted:
    return MessageSubmitted(
        conversation_id=conversation_id,
        user_id=f"user-{RUN}",
        message_id=new_id(),
        response_id=new_id(),
        content="hello",
        model="scripted",
    )


async def started_on(topics: Topics, failing: Topics, message: MessageSubmitted, producer: EventProducer) -> faust.App:
    """`message` submitted in a new conversation, and an app started on `failing`: the topics as
    the write that fails sees them."""
    started = ConversationStarted(conversation_id=message.conversation_id, user_id=message.user_id)
    for event in (started, message):
        await producer.send(topics.conversations, event)
    app = create_app(GROUP, failing, cache_namespace=RUN, offset_reset="earliest")
    await app.start()
    return app


async def assert_crashed_uncommitted_then_answered(
    topics: Topics, failing: Topics, message: MessageSubmitted, exits: Exits, reason_says: str
) -> None:
    """An app on `failing` crashes on `message` with `reason_says` in its reason, leaves its
    offsets short of the message (rule 2), and an app restarted on `topics` answers it."""
    log = LogTail([topics.conversations, topics.inference_requests])
    producer = EventProducer()
    try:
        async with projected(topics.conversations):
            app = await started_on(topics, failing, message, producer)
            [sent, _] = await log.of(message.response_id, MessageSubmitted, MessageAccepted, count=2)
            reason = await crash_reason(app)
            await stop_crashed(app, exits)
            assert reason_says in str(reason).lower(), reason
            partition = partition_for(message.conversation_id, topics.conversations)
            assert committed_offset(topics.conversations.name, partition) <= sent.offset

            async with running(topics):
                [request] = await log.of(message.response_id, InferenceRequested)
        assert isinstance(request.event, InferenceRequested)
        assert request.event.prompt[-1].content == "hello"
    finally:
        producer.close()
        log.close()
        forget_committed_offsets(GROUP)


async def test_an_undeliverable_event_stops_the_app_uncommitted_and_a_restart_answers_it(exits: Exits) -> None:
    with scratch_topics(RUN) as topics:
        refusing, message = undeliverable(topics)
        await assert_crashed_uncommitted_then_answered(topics, refusing, message, exits, reason_says="partition")


async def test_a_message_whose_request_waits_on_kafka_is_not_committed_past_by_the_record_after_it(
    exits: Exits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its InferenceRequested waits for a topic Kafka does not have until the delivery timeout, as
    on a hung broker, while its own MessageAccepted, the next record of its partition and one with
    nothing to send, is acked at once. Faust commits meanwhile (every 2.8 s) must stop short of
    the message, so that the crash at the timeout leaves it to the restart, which answers it."""
    monkeypatch.setattr(kafka_clients, "DELIVERY_TIMEOUT_S", SLOW_DELIVERY_S)
    with scratch_topics(RUN) as topics:
        requests = topics.inference_requests
        hanging = replace(topics, inference_requests=replace(requests, name=f"{requests.name}-absent"))
        await assert_crashed_uncommitted_then_answered(topics, hanging, hello(new_id()), exits, reason_says="timed out")


async def test_a_crashed_worker_whose_stop_hangs_ends_at_its_deadline(exits: Exits) -> None:
    """The race behind a stop that once hung a CI run: the crash ends Faust's consumer thread, and
    the stop hands its final commit to that thread (mode's `call_thread`); landing just before the
    thread's loop closes, the call is queued on a loop that never runs again, and the stop waits
    forever. Forced here by keeping the thread's loop from closing as the thread ends."""
    with scratch_topics(RUN) as topics:
        producer = EventProducer()
        try:
            async with projected(topics.conversations):
                app = await started_on(topics, *undeliverable(topics), producer)
                consumer_thread = app.consumer._thread  # type: ignore[attr-defined]  # Faust's consumer ServiceThread
                consumer_thread.thread_loop.close = lambda: None  # ends, but stays open to calls
                await crash_reason(app)
                await ended(consumer_thread._thread)
                stopped = await stop_crashed(app, exits)
        finally:
            producer.close()
            forget_committed_offsets(GROUP)
    assert not stopped, "the stop finished: this test no longer reproduces the hang"
    assert exits.statuses == [wedged.EXIT_WEDGED]


async def ended(thread: threading.Thread) -> None:
    deadline = time.monotonic() + STOP_LIMIT_S
    while thread.is_alive():
        assert time.monotonic() < deadline, f"the consumer thread still runs {STOP_LIMIT_S}s after the crash"
        await asyncio.sleep(0.05)
