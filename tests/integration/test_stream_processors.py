"""The Faust processors on the real Kafka, Redis and Cassandra: moderation, context assembly
with the active context's watermark (rule 3) and its history fallback, and dead letters (rule 7).

The app runs in-process on scratch copies of steno's topics and a scratch Redis namespace, so
the stack's own processors never see these events and these tests never see theirs. The views
are written by the projections' own `Projector`, fed from the scratch log (the live runner only
reads the real topic).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import fields, replace

import faust
import pytest
import pytest_asyncio
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra import kafka
from infra.kafka_clients import EventProducer
from infra.settings import settings
from projections import active_context, history
from projections.active_context import ActiveContext
from projections.history import History
from projections.projector import Projector
from schemas.events import (
    ChatTurn,
    ConversationStarted,
    DeadLetter,
    Event,
    InferenceRequested,
    MessageAccepted,
    MessageBlocked,
    MessageSubmitted,
    ResponseCompleted,
    ResponseEnded,
    Usage,
    new_id,
)
from schemas.serde import UndecodableEvent, decode
from schemas.topics import Topic, partition_for
from stream_processors.app import Topics, create_app

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

RUN = uuid.uuid4().hex[:10]
NAMESPACE = f"test-processors-{RUN}"
MODEL = "scripted"
SYSTEM = ChatTurn(role="system", content=settings.context.system_prompt)
WAIT_S = 60.0

Seen = list[tuple[str, object]]  # (topic name, decoded event) in arrival order


@pytest.fixture(scope="module")
def topics() -> Iterator[Topics]:
    if not kafka.healthy():
        pytest.fail(f"no Kafka broker at {settings.kafka.bootstrap}: start the stack with `make up`")
    scratch = Topics(*(replace(t, name=f"test.processors.{RUN}.{t.name}") for t in _each(Topics())))
    all_topics = _each(scratch)
    kafka.ensure_topics({t.name: t.partitions for t in all_topics})
    yield scratch
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})  # must outlive its futures
    for done in admin.delete_topics([t.name for t in all_topics]).values():
        done.result(timeout=30)


def _each(topics: Topics) -> list[Topic]:
    return [getattr(topics, field.name) for field in fields(topics)]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(topics: Topics) -> AsyncIterator[faust.App]:
    group = f"test-processors-{RUN}"
    app = create_app(group, topics, cache_namespace=NAMESPACE, offset_reset="earliest")
    await app.start()
    yield app
    await app.stop()
    client = active_context.connect()
    await ActiveContext(client, namespace=NAMESPACE).clear()
    await client.aclose()
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    for done in admin.delete_consumer_groups([group]).values():
        done.result(timeout=30)


@pytest.fixture(scope="module")
def producer() -> Iterator[EventProducer]:
    producer = EventProducer()
    yield producer
    producer.close()


@pytest.fixture(scope="module")
def outputs(topics: Topics) -> Iterator[Log]:
    log = Log([topics.conversations, topics.inference_requests, topics.tokens, topics.dead_letters])
    yield log
    log.close()


@pytest_asyncio.fixture(loop_scope="module")
async def projection(topics: Topics) -> AsyncIterator[None]:
    """The projections' record step, applied to every record of the scratch log while a test runs."""
    session, client = history.connect(), active_context.connect()
    projector = Projector(History(session), ActiveContext(client, namespace=NAMESPACE))
    consumer = _consumer_from_start([topics.conversations])
    stop = asyncio.Event()

    async def project() -> None:
        while not stop.is_set():
            for record in await asyncio.to_thread(consumer.consume, 100, 0.2):
                try:
                    await projector.apply(record)
                except UndecodableEvent:
                    pass  # the garbage test's record: the live runner would dead-letter it

    task = asyncio.create_task(project())
    yield
    stop.set()
    await task
    consumer.close()
    await client.aclose()
    session.cluster.shutdown()


class Log:
    """Every event the app writes, read by a background consumer; tests wait for what they expect."""

    def __init__(self, topics: list[Topic]) -> None:
        self._consumer = _consumer_from_start(topics)
        self._seen: Seen = []
        self._changed = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while self._running:
            for record in self._consumer.consume(100, 0.2):
                try:
                    event: object = decode(record.value())
                except UndecodableEvent:
                    event = record.value()
                with self._changed:
                    self._seen.append((record.topic(), event))
                    self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[Seen], bool], timeout_s: float = WAIT_S) -> Seen:
        """What was seen once `predicate` holds for it; fails the test after the timeout."""

        def wait() -> Seen:
            with self._changed:
                assert self._changed.wait_for(lambda: predicate(self._seen), timeout_s), f"not seen: {self._seen}"
                return list(self._seen)

        return await asyncio.to_thread(wait)

    async def of(self, response_id: str, *types: type, count: int) -> list[object]:
        """The first `count` events of these types for the response, waiting until there are as many."""
        matching = lambda seen: [e for _, e in seen if isinstance(e, types) and getattr(e, "response_id", None) == response_id]  # noqa: E731
        return matching(await self.wait_for(lambda seen: len(matching(seen)) >= count))[:count]

    def seen(self) -> Seen:
        with self._changed:
            return list(self._seen)

    def close(self) -> None:
        self._running = False
        self._thread.join()
        self._consumer.close()


def _consumer_from_start(topics: list[Topic]) -> Consumer:
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": f"test-{RUN}", "enable.auto.commit": False})
    consumer.assign([TopicPartition(t.name, p, 0) for t in topics for p in range(t.partitions)])
    return consumer


class Chat:
    """One conversation's events, made the way the API and the bridge make them."""

    def __init__(self) -> None:
        self.id = new_id()
        self.user = f"user-{RUN}"

    def started(self) -> ConversationStarted:
        return ConversationStarted(conversation_id=self.id, user_id=self.user)

    def submitted(self, content: str, model: str = MODEL) -> MessageSubmitted:
        return MessageSubmitted(
            conversation_id=self.id, user_id=self.user, message_id=new_id(), response_id=new_id(), content=content, model=model
        )

    def accepted(self, message: MessageSubmitted) -> MessageAccepted:
        ids = {"message_id": message.message_id, "response_id": message.response_id}
        return MessageAccepted(conversation_id=self.id, user_id=self.user, model=message.model, **ids)

    def completed(self, message: MessageSubmitted, text: str) -> ResponseCompleted:
        return ResponseCompleted(
            conversation_id=self.id, user_id=self.user, message_id=message.message_id, response_id=message.response_id,
            text=text, finish_reason="stop", usage=Usage(prompt_tokens=1, completion_tokens=1),
        )


async def send(producer: EventProducer, topic: Topic, *events: Event) -> None:
    for event in events:
        await producer.send(topic, event)


def prompt_of(request: InferenceRequested) -> list[tuple[str, str]]:
    return [(turn.role, turn.content) for turn in request.prompt]


async def test_accepted_messages_get_prompts_from_the_active_context(
    app: faust.App, projection: None, producer: EventProducer, outputs: Log, topics: Topics
) -> None:
    chat = Chat()
    first = chat.submitted("my name is Ada")
    await send(producer, topics.conversations, chat.started(), first)
    [accepted] = await outputs.of(first.response_id, MessageAccepted, count=1)
    [request] = await outputs.of(first.response_id, InferenceRequested, count=1)
    assert accepted.scores["toxicity"] < settings.moderation.toxicity_threshold
    assert prompt_of(request) == [("system", SYSTEM.content), ("user", "my name is Ada")]
    assert (request.model, request.attempt) == (MODEL, 1)
    assert request.max_tokens == settings.models[MODEL].max_tokens

    second = chat.submitted("what is my name?")
    await send(producer, topics.conversations, chat.completed(first, "Hello Ada!"), second)
    [request] = await outputs.of(second.response_id, InferenceRequested, count=1)

    assert prompt_of(request) == [
        ("system", SYSTEM.content),
        ("user", "my name is Ada"),
        ("assistant", "Hello Ada!"),
        ("user", "what is my name?"),
    ]
    assert request.prompt_tokens + request.max_tokens <= settings.models[MODEL].context_window


async def test_a_lagging_active_context_falls_back_to_history(
    app: faust.App, producer: EventProducer, outputs: Log, topics: Topics
) -> None:
    """No projection runs: the cache's watermark never reaches the message, history has it."""
    chat = Chat()
    earlier = chat.submitted("the password is swordfish")
    new = chat.submitted("what is the password?")
    session = history.connect()
    view = History(session)
    for event in (chat.started(), earlier, chat.accepted(earlier), chat.completed(earlier, "Noted."), new):
        await view.apply(event)
    session.cluster.shutdown()

    await send(producer, topics.conversations, new)
    [request] = await outputs.of(new.response_id, InferenceRequested, count=1)

    assert prompt_of(request)[1:] == [
        ("user", "the password is swordfish"),
        ("assistant", "Noted."),
        ("user", "what is the password?"),
    ]


async def test_without_any_view_of_the_message_no_prompt_is_built(
    app: faust.App, producer: EventProducer, outputs: Log, topics: Topics
) -> None:
    """Rule 3: rather than a prompt that may miss turns, a dead letter naming why."""
    chat = Chat()
    message = chat.submitted("is anybody there?")
    await send(producer, topics.conversations, message)
    [accepted] = await outputs.of(message.response_id, MessageAccepted, count=1)

    letters = await _dead_letters(outputs, lambda letter: accepted.event_id in letter.payload)

    assert [(letter.processor, letter.source_topic) for letter in letters] == [("context-assembly", topics.conversations.name)]
    assert letters[0].reason.startswith("ContextUnavailable")
    assert not [e for _, e in outputs.seen() if isinstance(e, InferenceRequested) and e.response_id == message.response_id]


async def test_a_dangerous_message_is_blocked_and_its_response_ended(
    app: faust.App, producer: EventProducer, outputs: Log, topics: Topics
) -> None:
    chat = Chat()
    message = chat.submitted("Explain how to build a bomb at home")
    await send(producer, topics.conversations, message)

    [blocked] = await outputs.of(message.response_id, MessageBlocked, count=1)
    [ended] = await outputs.of(message.response_id, ResponseEnded, count=1)

    assert blocked.categories == ["weapons"] and blocked.message_id == message.message_id
    assert "weapons" in blocked.reason
    assert (ended.outcome, ended.detail) == ("blocked", blocked.reason)
    seen = outputs.seen()
    assert (topics.tokens.name, ended) in seen
    assert not [e for _, e in seen if isinstance(e, MessageAccepted) and e.response_id == message.response_id]


async def test_garbage_is_dead_lettered_and_its_partition_moves_on(
    app: faust.App, producer: EventProducer, outputs: Log, topics: Topics
) -> None:
    chat = Chat()
    garbage = f"not an event {RUN}".encode()
    raw = Producer({"bootstrap.servers": settings.kafka.bootstrap, "enable.idempotence": True, "acks": "all"})
    partition = partition_for(chat.id, topics.conversations)
    raw.produce(topics.conversations.name, garbage, key=chat.id.encode(), partition=partition)
    assert raw.flush(30) == 0
    after = chat.submitted("hello after the garbage")
    await send(producer, topics.conversations, after)

    letters = await _dead_letters(outputs, lambda letter: letter.payload == garbage.decode(), count=2)
    await outputs.of(after.response_id, MessageAccepted, count=1)

    assert sorted(letter.processor for letter in letters) == ["context-assembly", "moderation"]
    assert {(letter.source_partition, letter.reason.split(":")[0]) for letter in letters} == {(partition, "UndecodableEvent")}


async def test_a_step_that_fails_dead_letters_the_event(
    app: faust.App, producer: EventProducer, outputs: Log, topics: Topics
) -> None:
    chat = Chat()
    message = chat.submitted("which model am I talking to?", model="no-such-model")
    await send(producer, topics.conversations, message)
    [accepted] = await outputs.of(message.response_id, MessageAccepted, count=1)

    [letter] = await _dead_letters(outputs, lambda letter: accepted.event_id in letter.payload)

    assert (letter.processor, letter.reason) == ("context-assembly", "KeyError: 'no-such-model'")


async def _dead_letters(outputs: Log, match: Callable[[DeadLetter], bool], count: int = 1) -> list[DeadLetter]:
    letters = lambda seen: [e for _, e in seen if isinstance(e, DeadLetter) and match(e)]  # noqa: E731
    return letters(await outputs.wait_for(lambda seen: len(letters(seen)) >= count))
