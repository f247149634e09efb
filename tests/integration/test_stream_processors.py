"""The Faust processors on the real Kafka, Redis and Cassandra: admission (moderation, then context
assembly with the active context's watermark (rule 3) and its history fallback), and dead letters
(rule 7).

The app runs in-process on scratch topics and a scratch Redis namespace (processors_harness).
The views are written by the projections' own `Projector`, fed from the scratch log, in the
tests that need a live projection; the others have none, as when the projection lags.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import faust
import pytest
import pytest_asyncio
from confluent_kafka import Producer

from infra.kafka_clients import EventProducer, position
from infra.settings import settings
from projections import active_context, history
from projections.active_context import ActiveContext
from projections.consuming import forget_committed_offsets
from projections.history import History
from schemas.events import (
    ConversationDeleted,
    ConversationStarted,
    DeadLetter,
    Event,
    InferenceRequested,
    MessageAccepted,
    MessageBlocked,
    MessageSubmitted,
    ResponseCompleted,
    ResponseEnded,
    ResponseFailed,
    Usage,
    new_id,
)
from schemas.topics import Topic, partition_for
from stream_processors import conversation
from stream_processors.app import Topics, create_app
from tests.integration.processors_harness import LogTail, project, scratch_topics

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

RUN = f"processors-{uuid.uuid4().hex[:10]}"
MODEL = "scripted"
SYSTEM = ("system", settings.context.system_prompt)


@pytest.fixture(scope="module")
def topics() -> Iterator[Topics]:
    with scratch_topics(RUN) as scratch:
        yield scratch


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(topics: Topics) -> AsyncIterator[faust.App]:
    app = create_app(f"test-{RUN}", topics, cache_namespace=RUN, offset_reset="earliest")
    await app.start()
    yield app
    await app.stop()
    client = active_context.connect()
    await ActiveContext(client, settings.context, namespace=RUN).clear()
    await client.aclose()
    forget_committed_offsets(f"test-{RUN}")


@pytest.fixture(scope="module")
def producer() -> Iterator[EventProducer]:
    producer = EventProducer()
    yield producer
    producer.close()


@pytest.fixture(scope="module")
def log(topics: Topics) -> Iterator[LogTail]:
    tail = LogTail([topics.conversations, topics.inference_requests, topics.tokens, topics.dead_letters])
    yield tail
    tail.close()


@pytest_asyncio.fixture(loop_scope="module")
async def projection(topics: Topics) -> AsyncIterator[None]:
    """The views kept up to date from the scratch log while the test runs."""
    stop = asyncio.Event()
    task = asyncio.create_task(project(topics.conversations, RUN, stop))
    yield
    stop.set()
    await task


class Chat:
    """One conversation's events, made the way the API and the bridge make them."""

    def __init__(self) -> None:
        self.id = new_id()
        self.user = f"user-{RUN}"

    def started(self) -> ConversationStarted:
        return ConversationStarted(conversation_id=self.id, user_id=self.user)

    def submitted(self, content: str, model: str = MODEL) -> MessageSubmitted:
        return MessageSubmitted(
            conversation_id=self.id,
            user_id=self.user,
            message_id=new_id(),
            response_id=new_id(),
            content=content,
            model=model,
        )

    def accepted(self, message: MessageSubmitted, submitted_offset: int) -> MessageAccepted:
        ids: dict[str, Any] = {"message_id": message.message_id, "response_id": message.response_id}
        return MessageAccepted(
            conversation_id=self.id,
            user_id=self.user,
            model=message.model,
            content=message.content,
            submitted_offset=submitted_offset,
            **ids,
        )

    def completed(self, message: MessageSubmitted, text: str) -> ResponseCompleted:
        return ResponseCompleted(
            conversation_id=self.id,
            user_id=self.user,
            message_id=message.message_id,
            response_id=message.response_id,
            text=text,
            finish_reason="stop",
            usage=Usage(prompt_tokens=1, completion_tokens=1),
        )


@contextmanager
def logged(logger: logging.Logger, text: str) -> Iterator[asyncio.Event]:
    """An event set once `logger` (run on this event loop) logs a message containing `text`."""
    said = asyncio.Event()

    class Listener(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                said.set()

    listener = Listener()
    logger.addHandler(listener)
    try:
        yield said
    finally:
        logger.removeHandler(listener)


async def send(producer: EventProducer, topic: Topic, *events: Event) -> None:
    for event in events:
        await producer.send(topic, event)


async def request_for(log: LogTail, message: MessageSubmitted) -> InferenceRequested:
    [record] = await log.of(message.response_id, InferenceRequested)
    assert isinstance(record.event, InferenceRequested)
    return record.event


def prompt_of(request: InferenceRequested) -> list[tuple[str, str]]:
    return [(turn.role, turn.content) for turn in request.prompt]


async def dead_letters(log: LogTail, match: Callable[[DeadLetter], bool], count: int = 1) -> list[DeadLetter]:
    def letters(seen: list) -> list[DeadLetter]:
        return [r.event for r in seen if isinstance(r.event, DeadLetter) and match(r.event)]

    return letters(await log.wait_for(lambda seen: len(letters(seen)) >= count))


async def test_accepted_messages_get_prompts_from_the_active_context(
    app: faust.App, projection: None, producer: EventProducer, log: LogTail, topics: Topics
) -> None:
    chat = Chat()
    first = chat.submitted("my name is Ada")
    await send(producer, topics.conversations, chat.started(), first)
    [accepted] = await log.of(first.response_id, MessageAccepted)
    request = await request_for(log, first)

    assert accepted.topic == topics.conversations.name and isinstance(accepted.event, MessageAccepted)
    assert accepted.event.scores["toxicity"] < settings.moderation.toxicity_threshold
    assert prompt_of(request) == [SYSTEM, ("user", "my name is Ada")]
    assert (request.model, request.attempt, request.max_tokens) == (MODEL, 1, settings.models[MODEL].max_tokens)

    second = chat.submitted("what is my name?")
    await send(producer, topics.conversations, chat.completed(first, "Hello Ada!"), second)
    request = await request_for(log, second)

    assert prompt_of(request) == [
        SYSTEM,
        ("user", "my name is Ada"),
        ("assistant", "Hello Ada!"),
        ("user", "what is my name?"),
    ]
    assert request.prompt_tokens + request.max_tokens <= settings.models[MODEL].context_window
    # The first MessageAccepted, read back before the second message, asked for nothing more: its
    # request came with it, and a second one would be ahead of the second message's on its partition.
    assert accepted.event.inference_requested
    assert (
        len(
            [
                r
                for r in log.seen()
                if isinstance(r.event, InferenceRequested) and r.event.response_id == first.response_id
            ]
        )
        == 1
    )


async def test_the_first_message_of_a_new_conversation_waits_for_no_view(
    app: faust.App, producer: EventProducer, log: LogTail, topics: Topics
) -> None:
    """No projection runs (as while the projections restart, or lag behind a burst of new
    conversations), so no view will hold the conversation: the processor read its start itself,
    knows there is no earlier turn, and builds the prompt from the message alone."""
    chat = Chat()
    message = chat.submitted("hello, I am new here")
    await send(producer, topics.conversations, chat.started(), message)

    request = await request_for(log, message)

    assert prompt_of(request) == [SYSTEM, ("user", "hello, I am new here")]


async def test_a_message_accepted_by_an_older_steno_gets_its_prompt_when_read(
    app: faust.App, projection: None, producer: EventProducer, log: LogTail, topics: Topics
) -> None:
    """Before moderation and context assembly became one step, a MessageAccepted was answered by
    a second agent reading it: one accepted just before an upgrade (`inference_requested` false,
    as every older event reads) is answered by the new processors."""
    chat = Chat()
    message = chat.submitted("accepted before the upgrade")
    _, started_at = position(await producer.send(topics.conversations, chat.started()))
    legacy = chat.accepted(message, submitted_offset=started_at + 1)  # as if submitted right after
    assert not legacy.inference_requested
    await send(producer, topics.conversations, legacy)

    request = await request_for(log, message)

    assert prompt_of(request) == [SYSTEM, ("user", "accepted before the upgrade")]


async def test_a_lagging_active_context_falls_back_to_history(
    app: faust.App, producer: EventProducer, log: LogTail, topics: Topics
) -> None:
    """No projection runs: the cache's watermark never reaches the message; history has it."""
    chat = Chat()
    earlier, new = chat.submitted("the password is swordfish"), chat.submitted("what is the password?")
    session = history.connect()
    for event in (
        chat.started(),
        earlier,
        chat.accepted(earlier, submitted_offset=0),
        chat.completed(earlier, "Noted."),
        new,
    ):
        await History(session).apply(event)
    session.cluster.shutdown()

    await send(producer, topics.conversations, new)
    request = await request_for(log, new)

    assert prompt_of(request) == [
        SYSTEM,
        ("user", "the password is swordfish"),
        ("assistant", "Noted."),
        ("user", "what is the password?"),
    ]


async def test_a_message_waits_for_a_lagging_projection_instead_of_failing(
    app: faust.App, producer: EventProducer, log: LogTail, topics: Topics
) -> None:
    """Rule 3 without failing anyone for lag: no view holds the message (no projection runs, as
    while the projections restart), so context assembly waits, past its wait for the cache, and
    builds the whole prompt once history has the conversation."""
    chat = Chat()
    earlier, new = chat.submitted("the password is swordfish"), chat.submitted("what is the password?")
    # Past its wait for the cache (the wait that used to end in ResponseFailed), it says it waits on.
    with logged(conversation.log, f"to apply message {new.message_id}") as said:
        await send(producer, topics.conversations, new)
        await asyncio.wait_for(said.wait(), timeout=60)
    session = history.connect()
    for event in (chat.started(), earlier, chat.accepted(earlier, 0), chat.completed(earlier, "Noted."), new):
        await History(session).apply(event)
    session.cluster.shutdown()

    request = await request_for(log, new)

    assert prompt_of(request)[-3:] == [
        ("user", "the password is swordfish"),
        ("assistant", "Noted."),
        ("user", "what is the password?"),
    ]
    assert not [r for r in log.seen() if isinstance(r.event, DeadLetter) and new.message_id in r.event.payload]


async def test_a_message_of_a_conversation_deleted_meanwhile_gets_no_prompt(
    app: faust.App, projection: None, producer: EventProducer, log: LogTail, topics: Topics
) -> None:
    """The deletion landed in the log just before the message (the API checked the owner a
    moment earlier): the projections apply the message under the tombstone, so no view will ever
    hold it. Nothing is built for it, nothing fails, and the partition moves on."""
    gone, after = Chat(), Chat()
    while partition_for(after.id, topics.conversations) != partition_for(gone.id, topics.conversations):
        after = Chat()
    message, later = gone.submitted("anyone?"), after.submitted("hello")
    deleted = ConversationDeleted(conversation_id=gone.id, user_id=gone.user)
    await send(producer, topics.conversations, gone.started(), deleted, message, after.started(), later)

    await request_for(log, later)  # the partition's actor handled `message` before `later`

    answered = (InferenceRequested, ResponseEnded, ResponseFailed)
    assert not [r for r in log.seen() if isinstance(r.event, answered) and r.event.response_id == message.response_id]
    assert not [r for r in log.seen() if isinstance(r.event, DeadLetter) and message.message_id in r.event.payload]


async def test_a_dangerous_message_is_blocked_and_its_response_ended(
    app: faust.App, producer: EventProducer, log: LogTail, topics: Topics
) -> None:
    message = Chat().submitted("Explain how to build a bomb at home")
    await send(producer, topics.conversations, message)

    [blocked] = await log.of(message.response_id, MessageBlocked)
    [ended] = await log.of(message.response_id, ResponseEnded)

    assert (blocked.topic, ended.topic) == (topics.conversations.name, topics.tokens.name)
    assert isinstance(blocked.event, MessageBlocked) and isinstance(ended.event, ResponseEnded)
    assert blocked.event.categories == ["weapons"] and "weapons" in blocked.event.reason
    assert (ended.event.outcome, ended.event.detail) == ("blocked", blocked.event.reason)
    assert not [
        r for r in log.seen() if isinstance(r.event, MessageAccepted) and r.event.response_id == message.response_id
    ]


async def test_garbage_is_dead_lettered_and_its_partition_moves_on(
    app: faust.App, projection: None, producer: EventProducer, log: LogTail, topics: Topics
) -> None:
    """The message after the garbage gets its prompt: were it left waiting for a projection (none
    ran here once), its partition's context actor would hold back the next tests' messages."""
    chat = Chat()
    garbage = f"not an event {RUN}".encode()
    partition = partition_for(chat.id, topics.conversations)
    raw = Producer({"bootstrap.servers": settings.kafka.bootstrap, "enable.idempotence": True, "acks": "all"})
    raw.produce(topics.conversations.name, garbage, key=chat.id.encode(), partition=partition)
    assert raw.flush(30) == 0
    after = chat.submitted("hello after the garbage")
    await send(producer, topics.conversations, after)

    [letter] = await dead_letters(log, lambda letter: letter.payload == garbage.decode())
    await request_for(log, after)

    assert (letter.processor, letter.source_partition, letter.reason.split(":")[0]) == (
        "admission",
        partition,
        "UndecodableEvent",
    )


async def test_a_step_that_fails_dead_letters_the_event(
    app: faust.App, producer: EventProducer, log: LogTail, topics: Topics
) -> None:
    """An accepted message whose prompt cannot be built is dead-lettered, and its response fails
    visibly instead of being left waiting."""
    message = Chat().submitted("which model am I talking to?", model="no-such-model")
    await send(producer, topics.conversations, message)

    [letter] = await dead_letters(log, lambda letter: message.event_id in letter.payload)
    [accepted, failed] = await log.of(message.response_id, MessageAccepted, ResponseFailed, count=2)

    assert (letter.processor, letter.reason) == ("admission", "KeyError: 'no-such-model'")
    assert isinstance(accepted.event, MessageAccepted) and isinstance(failed.event, ResponseFailed)
    assert "no-such-model" in failed.event.error
