"""The projections against the real stack: Cassandra history, Redis active context, the runner
on a conversation log in Kafka, dead letters and replay.

Views live in scratch stores (a migrated keyspace and a Redis namespace per use) so tests never
see each other's state, and replay can rebuild into stores that are really empty. The runner and
replay run on scratch copies of the conversation-log and dead-letter topics: the stack's own
processors would act on events written to the real log, and the real log is kept forever.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from cassandra.cluster import Cluster, NoHostAvailable
from confluent_kafka import OFFSET_BEGINNING, Producer, TopicPartition
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient
from redis.asyncio import Redis

from infra import cassandra, kafka_clients, migrate
from infra.kafka_clients import EventProducer
from infra.settings import ContextSettings, settings
from ingest_api.claims import ReplyClaims
from projections import active_context
from projections.active_context import ActiveContext, turns_once_applied
from projections.generations import Generations
from projections.history import Conversation, History, Message, Response, Written
from projections.live import LiveContext
from projections.log_range import Scope
from projections.projector import Projector
from projections.replay import LiveRunnerError, empty_views, replay
from projections.runner import PROCESSOR, Runner, WriteTargets
from projections.status import Status
from projections.swap import build, rebuild_and_swap
from projections.watermark_signals import WatermarkSignals
from schemas.events import (
    ChatTurn,
    ConversationDeleted,
    ConversationRenamed,
    ConversationStarted,
    DeadLetter,
    Event,
    MessageAccepted,
    MessageBlocked,
    MessageSubmitted,
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    Usage,
    new_id,
)
from schemas.serde import decode, encode
from schemas.topics import CONVERSATIONS, DEAD_LETTERS, Topic, partition_for
from tests.integration.scratch import scratch_copies

pytestmark = pytest.mark.integration

WAIT_S = 30.0


# --- a conversation's events, as the pipeline emits them ------------------------------------


@dataclass
class Chat:
    conversation_id: str = field(default_factory=new_id)
    user_id: str = field(default_factory=lambda: f"user-{new_id()}")

    def _ids(self) -> dict[str, Any]:
        return {"conversation_id": self.conversation_id, "user_id": self.user_id}

    def start(self, title: str = "a title") -> ConversationStarted:
        return ConversationStarted(**self._ids(), title=title)

    def rename(self, title: str) -> ConversationRenamed:
        return ConversationRenamed(**self._ids(), title=title)

    def delete(self) -> ConversationDeleted:
        return ConversationDeleted(**self._ids())

    def submit(self, content: str) -> MessageSubmitted:
        ids = {**self._ids(), "message_id": new_id(), "response_id": new_id()}
        return MessageSubmitted(**ids, content=content, model="scripted")

    def regenerate(self, m: MessageSubmitted) -> MessageSubmitted:
        """The same message again, for a new reply that replaces m's."""
        return m.model_copy(update={"event_id": new_id(), "response_id": new_id(), "replaces": m.response_id})

    def accept(self, m: MessageSubmitted) -> MessageAccepted:
        # the views ignore where the submission is in the log: only context assembly waits on it
        return MessageAccepted(**self._pair(m), model=m.model, content=m.content, submitted_offset=0)

    def block(self, m: MessageSubmitted) -> MessageBlocked:
        return MessageBlocked(**self._pair(m), categories=["weapons"], reason="That request is not allowed.")

    def complete(self, m: MessageSubmitted, text: str) -> ResponseCompleted:
        usage = Usage(prompt_tokens=3, completion_tokens=len(text.split()))
        return ResponseCompleted(**self._pair(m), text=text, finish_reason="stop", usage=usage)

    def fail(self, m: MessageSubmitted) -> ResponseFailed:
        return ResponseFailed(**self._pair(m), error="triton unavailable")

    def cancel(self, m: MessageSubmitted, text: str) -> ResponseCancelled:
        return ResponseCancelled(**self._pair(m), text=text)

    def _pair(self, m: MessageSubmitted) -> dict[str, Any]:
        return {**self._ids(), "message_id": m.message_id, "response_id": m.response_id}

    @property
    def partition(self) -> int:
        return partition_for(self.conversation_id, CONVERSATIONS)


def every_outcome(chat: Chat) -> list[Event]:
    """A conversation with one message of each fate: answered, blocked, cancelled, failed, pending."""
    answered, blocked, cancelled, failed, pending = (chat.submit(q) for q in ("q1", "q2", "q3", "q4", "q5"))
    return [
        chat.start(),
        answered,
        chat.accept(answered),
        chat.complete(answered, "a1"),
        blocked,
        chat.block(blocked),
        cancelled,
        chat.accept(cancelled),
        chat.cancel(cancelled, "a3 partial"),
        failed,
        chat.accept(failed),
        chat.fail(failed),
        pending,
    ]


# --- stores -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not cassandra.healthy():
        pytest.fail("no Cassandra at 127.0.0.1:9042: start the stack with `make up`")
    cluster, _ = cassandra.connect(timeout_s=30.0)
    yield cluster
    cluster.shutdown()


@contextmanager
def scratch_history(cluster: Cluster) -> Iterator[History]:
    """A History on a freshly migrated keyspace of its own, dropped afterwards."""
    keyspace = f"steno_test_{uuid.uuid4().hex[:12]}"
    migrate.apply_all(keyspace)
    try:
        yield History(cluster.connect(keyspace))
    finally:
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)


@pytest.fixture(scope="module")
def history(cluster: Cluster) -> Iterator[History]:
    with scratch_history(cluster) as history:
        yield history


@pytest.fixture(scope="module")
def empty_history(cluster: Cluster) -> Iterator[History]:
    with scratch_history(cluster) as history:
        yield history


@asynccontextmanager
async def scratch_namespace() -> AsyncIterator[tuple[Redis, str]]:
    """A Redis client and a namespace of its own, whose keys are deleted afterwards."""
    client = active_context.connect()
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    try:
        yield client, namespace
    finally:
        async for key in client.scan_iter(match=f"{namespace}:*", count=1000):
            await client.unlink(key)
        await client.aclose()


@asynccontextmanager
async def scratch_context(config: ContextSettings = settings.context) -> AsyncIterator[ActiveContext]:
    """An ActiveContext (and the reply claims it releases) in a Redis namespace of its own."""
    async with scratch_namespace() as (client, namespace):
        yield ActiveContext(client, config, namespace=namespace, claims_namespace=namespace)


@pytest.fixture
async def context() -> AsyncIterator[ActiveContext]:
    async with scratch_context() as context:
        yield context


@pytest.fixture
async def claimed() -> AsyncIterator[tuple[ReplyClaims, ActiveContext]]:
    """The API's reply claims, and the projection that releases them, in one scratch namespace."""
    async with scratch_namespace() as (client, namespace):
        context = ActiveContext(client, settings.context, namespace=namespace, claims_namespace=namespace)
        yield ReplyClaims(client, namespace), context


async def stored(conversation_id: str) -> tuple[dict[str, str], int]:
    """The conversation's cached hash as Redis holds it, whatever readers make of it, and its TTL."""
    client = active_context.connect()
    try:
        [key] = [key async for key in client.scan_iter(match=f"test-*:ctx:*:{conversation_id}")]
        return await client.hgetall(key), await client.ttl(key)  # type: ignore[misc]  # redis-py: Awaitable | value (redis/redis-py#2399)
    finally:
        await client.aclose()


Condition = Callable[[], bool | Awaitable[bool]]


async def eventually(condition: Condition, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await _holds(condition):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


async def applied_through(context: ActiveContext, partition: int, offset: int) -> bool:
    """Whether the cache has applied the partition's log up to `offset`."""
    return await context.applied_offset(partition) >= offset


async def _holds(condition: Condition) -> bool:
    result = condition()
    return await result if inspect.isawaitable(result) else result


# --- the history view ---------------------------------------------------------------------


async def test_history_shows_each_turn_with_its_outcome(history: History) -> None:
    chat = Chat()
    events = every_outcome(chat)
    for event in events:
        await history.apply(event)

    messages = await history.messages(chat.conversation_id)
    assert [(m.role, m.content, m.status) for m in messages] == [
        ("user", "q1", Status.ACCEPTED),
        ("assistant", "a1", Status.COMPLETED),
        ("user", "q2", Status.BLOCKED),
        ("assistant", "That request is not allowed.", Status.BLOCKED),
        ("user", "q3", Status.ACCEPTED),
        ("assistant", "a3 partial", Status.CANCELLED),
        ("user", "q4", Status.ACCEPTED),
        ("assistant", "", Status.FAILED),
        ("user", "q5", Status.PENDING),
        ("assistant", "", Status.PENDING),
    ]
    submitted, accepted, completed = events[1:4]
    assert isinstance(submitted, MessageSubmitted)
    question, answer = messages[0], messages[1]
    assert (question.message_id, answer.message_id) == (submitted.message_id, submitted.response_id)
    assert (question.reply_to, answer.reply_to) == (None, submitted.message_id)
    assert (answer.finish_reason, messages[3].detail) == ("stop", "weapons")
    assert messages[7].detail == "triton unavailable"
    assert question.created_at == answer.created_at == millis(submitted.occurred_at)
    assert question.updated_at == millis(accepted.occurred_at)
    assert answer.updated_at == millis(completed.occurred_at)


async def test_history_answers_ownership_and_lists_conversations_newest_first(history: History) -> None:
    older, newer = Chat(), Chat()
    newer.user_id = older.user_id
    submitted = older.submit("hello")
    for event in (older.start("older"), submitted, newer.start("newer")):
        await history.apply(event)

    assert await history.conversation_owner(older.conversation_id) == older.user_id
    assert await history.conversation_owner(new_id()) is None
    listed = await history.conversations(older.user_id, limit=10)
    assert [(c.conversation_id, c.title) for c in listed] == [
        (newer.conversation_id, "newer"),
        (older.conversation_id, "older"),
    ]
    assert listed[1] == Conversation(older.conversation_id, older.user_id, "older", listed[1].created_at)
    assert await history.conversations(older.user_id, limit=1) == listed[:1]
    assert await history.response(submitted.response_id) == Response(
        submitted.response_id, older.conversation_id, older.user_id, submitted.message_id
    )
    assert await history.response(new_id()) is None


async def test_history_is_the_same_after_redelivery_and_out_of_order_replays(history: History) -> None:
    chat = Chat()
    events = every_outcome(chat)
    for event in events:
        await history.apply(event)
    built = await history.messages(chat.conversation_id)

    for event in [*events, *reversed(events)]:  # redelivered, then a replay racing behind the live writer
        await history.apply(event)

    assert await history.messages(chat.conversation_id) == built
    assert await history.conversations(chat.user_id, limit=10) != []


def regenerated(chat: Chat) -> tuple[list[Event], MessageSubmitted]:
    """An answered message whose reply the user regenerated; returns the events and the regeneration."""
    asked = chat.submit("q1")
    again = chat.regenerate(asked)
    events = [
        chat.start(),
        asked,
        chat.accept(asked),
        chat.complete(asked, "first try"),
        again,
        chat.accept(again),
        chat.complete(again, "second try"),
    ]
    return events, again


def deleted(chat: Chat) -> list[Event]:
    """A renamed conversation of every outcome, then a regeneration, then deleted; then events
    that lost a race with the deletion (a rename, a message from an API that missed it)."""
    events, _ = regenerated(chat)
    late = chat.submit("too late")
    return [*events, *every_outcome(chat)[1:], chat.rename("renamed"), chat.delete(), chat.rename("late"), late]


async def test_a_batch_of_long_messages_is_written_whole_however_large(history: History) -> None:
    """A batch (replay, a projection catching up) may hold many long turns of one conversation:
    more than Cassandra takes in one multi-partition batch (batch_size_fail_threshold, 50 KiB)."""
    chat = Chat()
    long = settings.api.max_message_bytes // 2  # ~16 KiB, as much again in each reply
    events: list[Event] = [chat.start()]
    for n in range(4):
        m = chat.submit(f"q{n} " + "x" * long)
        events += [m, chat.accept(m), chat.complete(m, f"a{n} " + "y" * long)]

    written = await history.apply_all(events)

    assert written.failures == {}
    messages = await history.messages(chat.conversation_id)
    assert [(m.content[:2], len(m.content), m.status) for m in messages] == [
        (f"{role}{n}", long + 3, status)
        for n in range(4)
        for role, status in (("q", Status.ACCEPTED), ("a", Status.COMPLETED))
    ]


async def test_a_rename_changes_the_title_everywhere_it_is_listed(history: History) -> None:
    chat = Chat()
    started = chat.start("first")
    for event in (started, chat.rename("second"), started):  # the start replayed: the rename still wins
        await history.apply(event)

    [listed] = await history.conversations(chat.user_id)
    assert listed.title == "second"


async def test_a_regenerated_reply_replaces_the_old_one_in_history(history: History) -> None:
    chat = Chat()
    events, again = regenerated(chat)
    for event in [*events, *reversed(events)]:  # and redelivered out of order
        await history.apply(event)

    messages = await history.messages(chat.conversation_id)
    assert [(m.message_id, m.content, m.status) for m in messages] == [
        (again.message_id, "q1", Status.ACCEPTED),
        (again.response_id, "second try", Status.COMPLETED),
    ]
    assert await history.response(again.replaces or "") is not None  # its stream stays readable


async def test_a_deleted_conversation_leaves_no_row_whatever_comes_after(history: History) -> None:
    chat = Chat()
    events = deleted(chat)
    for event in [*events, *reversed(events)]:  # a replay beside the live runner, out of order
        await history.apply(event)

    assert await history.conversation_owner(chat.conversation_id) is None
    assert await history.conversations(chat.user_id) == []
    assert await history.messages(chat.conversation_id) == []
    # (a message that lost the race keeps a `responses` row that points into nothing: the API checks
    # the conversation too before it serves a response)
    *submissions, _late = [e for e in events if isinstance(e, MessageSubmitted)]
    assert [await history.response(m.response_id) for m in submissions] == [None] * len(submissions)


# --- the active-context view --------------------------------------------------------------


async def test_context_holds_accepted_questions_and_finished_answers(context: ActiveContext) -> None:
    chat = Chat()
    for offset, event in enumerate(every_outcome(chat)):
        assert await context.apply(event, chat.partition, offset)

    assert await context.turns(chat.conversation_id) == [
        ChatTurn(role="user", content="q1"),
        ChatTurn(role="assistant", content="a1"),
        ChatTurn(role="user", content="q3"),
        ChatTurn(role="assistant", content="a3 partial"),
        ChatTurn(role="user", content="q4"),
    ]


async def test_context_ignores_redelivered_events(context: ActiveContext) -> None:
    chat = Chat()
    events = every_outcome(chat)
    for offset, event in enumerate(events):
        await context.apply(event, chat.partition, offset)
    before, _ = await stored(chat.conversation_id)

    for offset, event in enumerate(events):
        if isinstance(event, MessageSubmitted):  # would put its turn back to `pending` if applied
            assert not await context.apply(event, chat.partition, offset)

    after, _ = await stored(chat.conversation_id)
    assert after == before
    assert await context.applied_offset(chat.partition) == len(events) - 1


async def test_context_applies_after_redis_forgot_its_scripts(context: ActiveContext) -> None:
    """Redis restarted (or SCRIPT FLUSH): the apply pipeline, which runs its scripts by SHA1 alone
    (no SCRIPT EXISTS round trip), gets NOSCRIPT, loads them and runs again."""
    chat = Chat()
    first, *rest = every_outcome(chat)
    assert await context.apply(first, chat.partition, 0)
    client = active_context.connect()
    try:
        await client.script_flush()
    finally:
        await client.aclose()

    applied = await context.apply_all([(event, chat.partition, offset) for offset, event in enumerate(rest, 1)])

    assert all(applied)
    assert [turn.content for turn in await context.turns(chat.conversation_id) or []] == [
        "q1",
        "a1",
        "q3",
        "a3 partial",
        "q4",
    ]


async def test_context_drops_a_regenerated_reply(context: ActiveContext) -> None:
    chat = Chat()
    events, _ = regenerated(chat)
    for offset, event in enumerate(events):
        await context.apply(event, chat.partition, offset)

    assert await context.turns(chat.conversation_id) == [
        ChatTurn(role="user", content="q1"),
        ChatTurn(role="assistant", content="second try"),
    ]


async def test_context_forgets_a_deleted_conversation_for_good(context: ActiveContext) -> None:
    chat = Chat()
    for offset, event in enumerate(deleted(chat)):
        await context.apply(event, chat.partition, offset)

    assert await context.turns(chat.conversation_id) is None


async def test_context_keeps_only_conversations_it_saw_start(context: ActiveContext) -> None:
    chat = Chat()
    submitted = chat.submit("hello")
    for offset, event in enumerate([submitted, chat.accept(submitted)]):
        await context.apply(event, chat.partition, offset)

    assert await context.turns(chat.conversation_id) is None  # it would be partial: use the history

    started = Chat()
    await context.apply(started.start(), started.partition, 2)
    assert await context.turns(started.conversation_id) == []


async def test_context_keeps_the_newest_turns_up_to_its_cap_and_refreshes_its_ttl() -> None:
    config = ContextSettings(cache_turns=4, cache_ttl_s=600)
    chat = Chat()
    events: list[Event] = [chat.start()]
    for n in range(1, 4):
        m = chat.submit(f"q{n}")
        events += [m, chat.accept(m), chat.complete(m, f"a{n}")]

    async with scratch_context(config) as context:
        for offset, event in enumerate(events):
            await context.apply(event, chat.partition, offset)
        turns = await context.turns(chat.conversation_id)
        _, ttl = await stored(chat.conversation_id)

    assert [t.content for t in turns or []] == ["q2", "a2", "q3", "a3"]
    assert 0 < ttl <= 600


async def test_watermark_says_how_far_each_partition_is_applied(context: ActiveContext) -> None:
    chat = Chat()
    assert await context.applied_offset(chat.partition) == -1
    await context.apply(chat.start(), chat.partition, 7)

    assert await context.applied_offset(chat.partition) == 7
    assert await context.applied_offset((chat.partition + 1) % CONVERSATIONS.partitions) == -1
    await context.apply(chat.submit("late"), chat.partition, 9)
    assert await context.applied_offset(chat.partition) == 9


async def test_turns_once_applied_waits_for_the_watermark_then_reads_the_turns_before_the_message(
    context: ActiveContext,
) -> None:
    chat = Chat()
    first = chat.submit("q1")
    earlier = [chat.start(), first, chat.accept(first), chat.complete(first, "a1")]
    for offset, event in enumerate(earlier):
        await context.apply(event, chat.partition, offset)
    new = chat.submit("q2")
    new_offset = len(earlier)

    assert await context.turns_if_applied(chat.conversation_id, new.message_id, chat.partition, new_offset) == (
        False,
        None,
    )
    waiting = asyncio.create_task(
        turns_once_applied(context, chat.conversation_id, new.message_id, chat.partition, new_offset, WAIT_S)
    )
    await context.apply(new, chat.partition, new_offset)
    assert [t.content for t in await waiting or []] == ["q1", "a1"]
    assert await context.turns_if_applied(Chat().conversation_id, new.message_id, chat.partition, new_offset) == (
        True,
        None,
    )


async def test_a_waiting_reader_is_woken_when_the_projection_moves_the_watermark(context: ActiveContext) -> None:
    chat = Chat()
    signals = WatermarkSignals(active_context.connect())
    try:
        first = signals.next(chat.partition)
        await eventually(lambda: signals.listening, "the signals' subscription")
        await context.apply(chat.start(), chat.partition, 3)
        await asyncio.wait_for(first.wait(), WAIT_S)  # woken by the apply's publish, not a poll
        second = signals.next(chat.partition)
        assert second is not first and not second.is_set()  # the next move sets a new one
    finally:
        await signals.aclose()


async def test_one_response_in_flight_per_conversation(claimed: tuple[ReplyClaims, ActiveContext]) -> None:
    claims, context = claimed
    chat = Chat()
    first, second, third = chat.submit("1"), chat.submit("2"), chat.submit("3")

    assert await claims.claim_or_holder(chat.conversation_id, first.response_id, 60) is None
    assert await claims.claim_or_holder(chat.conversation_id, second.response_id, 60) == first.response_id
    await claims.release(chat.conversation_id, second.response_id)  # not its claim
    assert await claims.holder(chat.conversation_id) == first.response_id
    await claims.release(chat.conversation_id, first.response_id)
    assert await claims.holder(chat.conversation_id) is None

    assert await claims.claim_or_holder(chat.conversation_id, second.response_id, 60) is None
    await context.apply(chat.block(second), chat.partition, 0)  # the projection frees a reply's claim at its end
    assert await claims.holder(chat.conversation_id) is None

    assert await claims.claim_or_holder(chat.conversation_id, third.response_id, 60) is None
    await context.apply(chat.complete(first, "late"), chat.partition, 0)  # not a later reply's
    assert await claims.holder(chat.conversation_id) == third.response_id


async def test_a_claim_moves_only_from_the_response_that_holds_it(claimed: tuple[ReplyClaims, ActiveContext]) -> None:
    claims, _ = claimed
    chat = Chat()
    first, second, third = chat.submit("1"), chat.submit("2"), chat.submit("3")
    assert await claims.claim_or_holder(chat.conversation_id, first.response_id, 60) is None

    assert not await claims.take_over(chat.conversation_id, third.response_id, second.response_id, 60)
    assert await claims.take_over(chat.conversation_id, first.response_id, second.response_id, 60)
    assert await claims.holder(chat.conversation_id) == second.response_id


# --- the runner and replay on a scratch conversation log ----------------------------------


@dataclass(frozen=True)
class Topics:
    """The topics the runner reads and writes."""

    conversations: Topic
    dead_letters: Topic


@pytest.fixture
def topics() -> Iterator[Topics]:
    with scratch_copies("projections", [CONVERSATIONS, DEAD_LETTERS]) as (conversations, dead_letters):
        yield Topics(conversations, dead_letters)


def end_offsets(topic: Topic) -> list[TopicPartition]:
    consumer = kafka_clients.consumer(f"test-offsets-{new_id()}")
    try:
        partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
        return [TopicPartition(tp.topic, tp.partition, end) for tp, end in zip(partitions, ends, strict=True)]
    finally:
        consumer.close()


def always(projector: Projector) -> WriteTargets:
    """A single generation for the runner to write: these scratch stores."""

    async def written() -> list[Projector]:
        return [projector]

    return written


@asynccontextmanager
async def running(projector: Projector | Generations, topics: Topics) -> AsyncIterator[str]:
    """The runner, in a consumer group of its own that starts at the log's current end, on these
    scratch stores or on whichever of these generations is live."""
    group = f"test-projections-{new_id()}"
    starter = kafka_clients.consumer(group)
    starter.commit(offsets=end_offsets(topics.conversations), asynchronous=False)
    starter.close()
    consumer, producer = kafka_clients.consumer(group), EventProducer()
    stop = asyncio.Event()
    written = projector.written if isinstance(projector, Generations) else always(projector)
    runner = Runner(written, consumer, producer, topics.conversations, topics.dead_letters)
    task = asyncio.create_task(runner.run(stop))
    try:
        yield group
    finally:
        stop.set()
        await task
        consumer.close()
        producer.close()


async def produce(topic: Topic, events: list[Event]) -> int:
    """Send the events in order; returns the offset of the last one."""
    producer = EventProducer()
    try:
        sent = [producer.send(topic, event) for event in events]
        return kafka_clients.position((await asyncio.gather(*sent))[-1])[1]
    finally:
        producer.close()


def produce_garbage(topic: Topic, conversation_id: str) -> int:
    """Bytes that are no steno event, on the conversation's partition; returns their offset."""
    delivered: list[KafkaMessage] = []
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap, "enable.idempotence": True})
    producer.produce(
        topic.name,
        value=b"\x00\xffnot an event",
        key=conversation_id.encode(),
        partition=partition_for(conversation_id, topic),
        on_delivery=lambda _err, msg: delivered.append(msg),
    )
    producer.flush(10)
    return kafka_clients.position(delivered[0])[1]


def dead_letter_of(topics: Topics, partition: int, offset: int) -> DeadLetter:
    """The dead letter for that conversation-log record, read from the start of the dead-letter
    topic: a scratch one holds only this test's letters."""
    consumer = kafka_clients.consumer(f"test-dlq-{new_id()}")
    dead_letters = topics.dead_letters
    consumer.assign([TopicPartition(dead_letters.name, p, OFFSET_BEGINNING) for p in range(dead_letters.partitions)])
    try:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            record = consumer.poll(0.5)
            if record is None or record.error() is not None:
                continue
            letter = decode(record.value())
            assert isinstance(letter, DeadLetter)
            if (letter.source_partition, letter.source_offset) == (partition, offset):
                return letter
        pytest.fail(f"no dead letter for {topics.conversations.name}[{partition}]@{offset}")
    finally:
        consumer.close()


async def test_runner_projects_the_log_and_dead_letters_a_poison_pill(history: History, topics: Topics) -> None:
    chat = Chat()
    async with scratch_context() as context, running(Projector(history, context), topics) as group:
        poison = produce_garbage(topics.conversations, chat.conversation_id)
        last = await produce(topics.conversations, every_outcome(chat))

        await eventually(partial(applied_through, context, chat.partition, last), "the runner")
        turns = await context.turns(chat.conversation_id)
        messages = await history.messages(chat.conversation_id)
        committed = partial(committed_past, topics.conversations, group, chat.partition, last)
        await eventually(committed, "the offset commit")

    letter = dead_letter_of(topics, chat.partition, poison)
    assert (letter.processor, letter.source_topic) == (PROCESSOR, topics.conversations.name)
    assert "not a steno event" in letter.reason and "not an event" in letter.payload
    assert [t.content for t in turns or []] == ["q1", "a1", "q3", "a3 partial", "q4"]
    assert [m.status for m in messages][-2:] == [Status.PENDING, Status.PENDING]


async def test_runner_waits_out_a_store_outage_and_commits_only_after_the_effect(
    history: History, topics: Topics, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = Chat()
    store_back, attempts = asyncio.Event(), []
    apply_all = history.apply_all

    async def down_until_back(events: list[Event]) -> Written:
        if any(e.conversation_id == chat.conversation_id for e in events) and not store_back.is_set():
            attempts.append(events)
            raise NoHostAvailable("Cassandra is down (test)", {})
        return await apply_all(events)

    monkeypatch.setattr(history, "apply_all", down_until_back)
    async with scratch_context() as context, running(Projector(history, context), topics) as group:
        offset = await produce(topics.conversations, [chat.start()])
        await eventually(lambda: len(attempts) >= 3, "the runner to retry")
        assert not committed_past(topics.conversations, group, chat.partition, offset)
        assert await context.applied_offset(chat.partition) < offset

        store_back.set()
        committed = partial(committed_past, topics.conversations, group, chat.partition, offset)
        await eventually(committed, "the commit, after")
        assert await history.conversation_owner(chat.conversation_id) == chat.user_id


def committed_past(topic: Topic, group: str, partition: int, offset: int) -> bool:
    consumer = kafka_clients.consumer(group)
    try:
        [position] = consumer.committed([TopicPartition(topic.name, partition)], timeout=10)
        return position.offset > offset
    finally:
        consumer.close()


async def test_replay_into_empty_stores_rebuilds_what_the_live_runner_built(
    history: History, empty_history: History, topics: Topics
) -> None:
    chat = Chat()
    quiet = partial(replay, report=lambda _: None, conversations=topics.conversations)
    async with scratch_context() as live, running(Projector(history, live), topics):
        last = await produce(topics.conversations, every_outcome(chat))
        await eventually(partial(applied_through, live, chat.partition, last), "the live runner")
        live_view = await views(history, live, chat)

        async with scratch_context() as rebuilt:
            summary = await quiet(Projector(empty_history, rebuilt))
            assert await views(empty_history, rebuilt, chat) == live_view

        await quiet(Projector(history, live))  # beside the live runner: no change
        assert await views(history, live, chat) == live_view

    assert summary.read >= len(every_outcome(chat)) and summary.skipped == 0
    assert live_view[1] is not None and len(live_view[0]) == 10


async def test_reset_refuses_while_the_live_runner_consumes(cluster: Cluster, topics: Topics) -> None:
    chat = Chat()
    with scratch_history(cluster) as history:
        async with scratch_context() as context:
            projector = Projector(history, context)
            await history.apply(chat.start())
            await context.apply(chat.start(), chat.partition, 0)
            async with running(projector, topics) as group:
                await eventually(partial(group_has_members, group), "the runner to join its group")
                with pytest.raises(LiveRunnerError):
                    await empty_views(projector, live=True, live_group=group)
            assert await context.turns(chat.conversation_id) == []  # refused: nothing emptied
            await empty_views(projector, live=True, live_group=group)
            assert await context.turns(chat.conversation_id) is None
            assert await history.conversation_owner(chat.conversation_id) is None


async def test_replay_of_a_log_with_a_deletion_ends_with_nothing_of_it(
    history: History, empty_history: History, topics: Topics
) -> None:
    chat, kept = Chat(), Chat()
    kept.user_id = chat.user_id
    quiet = partial(replay, report=lambda _: None, conversations=topics.conversations)
    await produce(topics.conversations, [kept.start("kept"), *deleted(chat)])

    async with scratch_context() as rebuilt:
        await quiet(Projector(empty_history, rebuilt))
        rebuilt_view = await views(empty_history, rebuilt, chat)
        await quiet(Projector(empty_history, rebuilt))  # again, over what the first replay built
        assert await views(empty_history, rebuilt, chat) == rebuilt_view

    assert rebuilt_view[:2] == ([], None)
    assert [c.title for c in rebuilt_view[2]] == ["kept"]


def on_partition(partition: int) -> Chat:
    """A chat whose events share that partition of the log."""
    while (chat := Chat()).partition != partition:
        pass
    return chat


async def test_replay_of_one_conversation_reads_its_partition_and_applies_it_alone(
    empty_history: History, topics: Topics
) -> None:
    chat = Chat()
    neighbour, elsewhere = on_partition(chat.partition), on_partition((chat.partition + 1) % CONVERSATIONS.partitions)
    await produce(topics.conversations, [*every_outcome(neighbour), *every_outcome(chat), *every_outcome(elsewhere)])

    async with scratch_context() as rebuilt:
        scope = Scope(conversation=chat.conversation_id)
        summary = await replay(Projector(empty_history, rebuilt), topics.conversations, scope)
        turns = [await rebuilt.turns(c.conversation_id) for c in (chat, neighbour)]

    assert summary.read == 2 * len(every_outcome(chat))  # its partition only, the neighbour's records too
    assert summary.conversations == {chat.conversation_id}
    assert len(await empty_history.messages(chat.conversation_id)) == 10 and turns[0] is not None
    assert await empty_history.messages(neighbour.conversation_id) == [] and turns[1] is None


def produce_at(topic: Topic, events: list[Event], at: datetime) -> None:
    """Send the events with this log time (CreateTime), as if produced then."""
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap, "enable.idempotence": True})
    for event in events:
        key = event.conversation_id
        partition = partition_for(key, topic)
        producer.produce(topic.name, encode(event), key.encode(), partition, timestamp=int(at.timestamp() * 1000))
    assert producer.flush(10) == 0


def two_exchanges(chat: Chat) -> tuple[list[Event], list[Event]]:
    first, second = chat.submit("q1"), chat.submit("q2")
    return (
        [chat.start(), first, chat.accept(first), chat.complete(first, "a1")],
        [second, chat.accept(second), chat.complete(second, "a2")],
    )


@pytest.mark.parametrize("bound", ["time", "offset"])
async def test_replay_of_a_range_applies_only_the_events_in_it(cluster: Cluster, topics: Topics, bound: str) -> None:
    chat = Chat()
    early, late = two_exchanges(chat)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    produce_at(topics.conversations, early, an_hour_ago)
    produce_at(topics.conversations, late, an_hour_ago + timedelta(minutes=30))
    halfway = an_hour_ago + timedelta(minutes=15)

    scopes = {
        "time": (Scope(end=halfway), Scope(start=halfway)),
        "offset": (Scope(end=len(early)), Scope(start=len(early))),
    }
    seen: list[object] = []
    for scope in scopes[bound]:
        with scratch_history(cluster) as history:
            async with scratch_context() as rebuilt:
                summary = await replay(Projector(history, rebuilt), topics.conversations, scope)
                seen.append(([m.content for m in await history.messages(chat.conversation_id)], summary.read))
                seen.append(await rebuilt.turns(chat.conversation_id))

    assert seen == [
        (["q1", "a1"], len(early)),
        [ChatTurn(role="user", content="q1"), ChatTurn(role="assistant", content="a1")],
        (["q2", "a2"], len(late)),
        None,  # cached only from its start, which is not in this range
    ]


@asynccontextmanager
async def scratch_generations(cluster: Cluster) -> AsyncIterator[Generations]:
    """Generations under a pointer of their own, the first a migrated scratch keyspace; every
    generation named after it is dropped afterwards, keyspace and Redis keys."""
    run = uuid.uuid4().hex[:12]
    first = f"steno_test_{run}"
    migrate.apply_all(first)
    client = active_context.connect()
    try:
        yield Generations(
            cluster,
            client,
            settings.context,
            first=first,
            pointer=f"test-{run}:views:live",
            claims_namespace=f"test-{run}",
        )
    finally:
        session = cluster.connect()
        for keyspace in [k for k in cluster.metadata.keyspaces if k.startswith(first)]:
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
        for pattern in (f"{first}*", f"test-{run}:*"):
            async for key in client.scan_iter(match=pattern, count=1000):
                await client.unlink(key)
        await client.aclose()


async def test_the_runner_writes_a_generation_being_built_from_where_it_was_left_then_it_alone(
    cluster: Cluster, topics: Topics
) -> None:
    chat = Chat()
    exchanges = [chat.submit(q) for q in ("q1", "q2", "q3", "q4", "q5")]
    answered = [[m, chat.accept(m), chat.complete(m, m.content.replace("q", "a"))] for m in exchanges]
    async with scratch_generations(cluster) as known, running(known, topics):
        old = await known.live()
        new = f"{old}_b"
        await produce_and_wait(known, old, topics, [chat.start(), *answered[0]])
        migrate.apply_all(new)
        await build(known, new, topics.conversations)
        await produce_and_wait(known, old, topics, answered[1])  # after the replay: only the old one has it

        await known.begin(old, new)
        await produce_and_wait(known, new, topics, answered[2], old)  # written to both while new is built
        both = [await contents(known, name, chat) for name in (old, new)]
        await known.finish(old, new)
        await produce_and_wait(known, new, topics, answered[3])
        after = [await contents(known, name, chat) for name in (old, new)]

        summary, followed = await rebuild_and_swap(known, old, topics.conversations)  # and back, caught up
        await produce_and_wait(known, old, topics, answered[4])
        back = await contents(known, old, chat)

    up_to = ["q1", "a1", "q2", "a2", "q3", "a3", "q4", "a4", "q5", "a5"]
    assert both == [(up_to[:6], up_to[:6])] * 2  # the new one got q2 by going back, then q3 beside the old
    assert after == [(up_to[:6], up_to[:6]), (up_to[:8], up_to[:8])]  # the old one frozen once swapped
    assert followed and summary.read == 1 + 3 * 4
    assert back == (up_to, up_to)


async def test_the_context_assembler_reads_the_generation_live_now_after_a_swap_it_was_not_told_of(
    cluster: Cluster,
) -> None:
    """The live pointer is asked in the same round trip as the turns (or the watermark), read from
    the generation last seen live: once a swap moved the pointer, they are read again from the new one."""
    chat = Chat()
    asked = chat.submit("q1")
    partition = partition_for(chat.conversation_id, CONVERSATIONS)
    async with scratch_generations(cluster) as known:
        old = await known.live()
        new = f"{old}_b"
        migrate.apply_all(new)
        for name, events in (
            (old, [chat.start(), asked, chat.accept(asked)]),
            (new, [chat.start(), asked, chat.accept(asked), chat.complete(asked, "a1")]),
        ):
            await (await known.views(name)).context.apply_all([(e, partition, n) for n, e in enumerate(events)])
        reader, later = LiveContext(known), new_id()
        before = await reader.turns_if_applied(chat.conversation_id, later, partition, 1)
        applied_before = await reader.applied_offset(partition)
        await known.begin(old, new)
        await known.finish(old, new)  # the reader last saw `old` live
        applied_after = await reader.applied_offset(partition)
        await known.begin(new, old)
        await known.finish(new, old)  # and back
        after = await reader.turns_if_applied(chat.conversation_id, later, partition, 1)

    assert before == (True, [ChatTurn(role="user", content="q1")])
    assert after == (True, [ChatTurn(role="user", content="q1")])
    assert (applied_before, applied_after) == (2, 3)  # each generation's own watermark


async def contents(known: Generations, name: str, chat: Chat) -> tuple[list[str], list[str]]:
    """The chat's turns in the generation's history and in its cache."""
    views = await known.views(name)
    cached = await views.context.turns(chat.conversation_id) or []
    return [m.content for m in await views.history.messages(chat.conversation_id)], [t.content for t in cached]


async def produce_and_wait(known: Generations, name: str, topics: Topics, events: list[Event], *also: str) -> None:
    """Send the events and wait until generation `name`, and each of `also`, has applied them."""
    last = await produce(topics.conversations, events)
    partition = partition_for(events[0].conversation_id, CONVERSATIONS)
    for each in (name, *also):
        context = (await known.views(each)).context
        await eventually(partial(applied_through, context, partition, last), each)


def group_has_members(group: str) -> bool:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    return bool(admin.describe_consumer_groups([group])[group].result(timeout=10).members)


async def views(
    history: History, context: ActiveContext, chat: Chat
) -> tuple[list[Message], list[ChatTurn] | None, list[Conversation]]:
    """What the API and the context assembler can see of the chat."""
    return (
        await history.messages(chat.conversation_id),
        await context.turns(chat.conversation_id),
        await history.conversations(chat.user_id, limit=10),
    )


def millis(at: datetime) -> datetime:
    """A datetime as Cassandra keeps it: to the millisecond."""
    return at.replace(microsecond=at.microsecond // 1000 * 1000)
