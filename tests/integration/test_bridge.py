"""The inference bridge against the real Kafka, Redis and Triton (scripted model).

Each test runs its own bridge in-process, configured for what it checks, with a consumer group
of its own that starts at the end of the request topic: it serves only the requests the test
sends. The bridge that `make up` runs is stopped meanwhile, so that it cannot serve them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra import app_services, process
from infra.kafka_clients import EventProducer
from infra.settings import settings
from inference_bridge.attempts import KEY as ATTEMPT_KEY
from inference_bridge.service import Bridge
from schemas.events import (
    ChatTurn,
    DeadLetter,
    Event,
    GenerationCancelRequested,
    InferenceRequested,
    ResponseCancelled,
    ResponseCompleted,
    ResponseEnded,
    ResponseFailed,
    ResponseRestarted,
    ResponseStarted,
    TokenGenerated,
    new_id,
)
from schemas.serde import UndecodableEvent, decode
from schemas.topics import CONTROL, CONVERSATIONS, DEAD_LETTERS, INFERENCE_REQUESTS, TOKENS, Topic, partition_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("steno_topics", "stack_bridge_stopped")]

SCRIPT = "Hello there, friend. How are you today?"
SCRIPT_TOKENS = ["Hello ", "there, ", "friend. ", "How ", "are ", "you ", "today?"]
LONG_SCRIPT = " ".join(f"word{i}" for i in range(200))
WAIT_S = 20.0
DEAD_ENDPOINT = "127.0.0.1:9"  # discard: nothing listens there


@pytest.fixture(scope="module")
def stack_bridge_stopped() -> Iterator[None]:
    [service] = [s for s in app_services.services() if s.name == "bridge"]
    running = process.running_pid(service) is not None
    if running:
        process.stop(service)
    yield
    if running:
        process.start(service)


# --- running a bridge ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunningBridge:
    group: str
    task: asyncio.Task[None]

    async def crash(self) -> None:
        """Stop at once, draining and committing nothing, as if the process had died."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@asynccontextmanager
async def running_bridge(
    group: str | None = None,
    sampling: dict[str, Any] | None = None,
    endpoints: list[str] | None = None,
    **config: Any,
) -> AsyncIterator[RunningBridge]:
    """A bridge in the given consumer group, or in a fresh one that starts at the end of the
    request topic; the scripted model streams SCRIPT unless `sampling` says otherwise."""
    fresh_group = group is None
    group = group or f"steno-bridge-test-{uuid.uuid4().hex}"
    if fresh_group:
        await asyncio.to_thread(_commit_at_end, group)
    bridge = Bridge(
        settings.bridge.model_copy(update=config),
        endpoints or settings.triton.bridge_endpoints,
        redis_url=settings.redis.url,
        group_id=group,
        sampling={"scripted": {"script": SCRIPT, **(sampling or {})}},
    )
    stop = asyncio.Event()
    running = RunningBridge(group, asyncio.create_task(bridge.run(stop)))
    try:
        yield running
    finally:
        stop.set()
        if not running.task.cancelled():
            await running.task
        if fresh_group:
            await asyncio.to_thread(_delete_group, group)


def _commit_at_end(group: str) -> None:
    client = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": group})
    try:
        ends = [_end_of(client, INFERENCE_REQUESTS, p) for p in range(INFERENCE_REQUESTS.partitions)]
        client.commit(offsets=ends, asynchronous=False)
    finally:
        client.close()


def _end_of(client: Consumer, topic: Topic, partition: int) -> TopicPartition:
    _, high = client.get_watermark_offsets(TopicPartition(topic.name, partition), timeout=10)
    return TopicPartition(topic.name, partition, high)


def _delete_group(group: str) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    for future in admin.delete_consumer_groups([group]).values():
        future.result(timeout=10)


async def committed_past(group: str, partition: int, offset: int) -> None:
    """Wait until the group has committed the request at `offset` (commits are asynchronous)."""
    client = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": group})
    wanted = [TopicPartition(INFERENCE_REQUESTS.name, partition)]
    try:
        async with asyncio.timeout(WAIT_S):
            while (await asyncio.to_thread(client.committed, wanted, 10))[0].offset <= offset:
                pass
    finally:
        client.close()


def produce_raw(topic: Topic, partition: int, value: bytes) -> int:
    """Write bytes that are not a steno event; returns their offset."""
    delivered: list[Message] = []
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    producer.produce(topic.name, value=value, partition=partition, on_delivery=lambda _err, msg: delivered.append(msg))
    producer.flush(10)
    [message] = delivered
    return message.offset()


# --- talking to it through the log ----------------------------------------------------------


class Log:
    """One partition of a topic, read from the moment the test began."""

    def __init__(self, topic: Topic, partition: int) -> None:
        self._consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": "steno-tests"})
        self._consumer.assign([_end_of(self._consumer, topic, partition)])
        self.events: list[Any] = []

    async def until(self, done: Callable[[Any], bool]) -> list[Any]:
        """Every event read so far, once one of them is `done`."""
        async with asyncio.timeout(WAIT_S):
            while not any(done(event) for event in self.events):
                for message in await asyncio.to_thread(self._consumer.consume, 100, 0.2):
                    with contextlib.suppress(UndecodableEvent):
                        self.events.append(decode(message.value()))
        return self.events

    def close(self) -> None:
        self._consumer.close()


class Conversation:
    """A fresh conversation: sends requests and cancels, reads what the bridge wrote back."""

    def __init__(self) -> None:
        self.id = f"test-bridge-{new_id()}"
        self.tokens = Log(TOKENS, partition_for(self.id, TOKENS))
        self.history = Log(CONVERSATIONS, partition_for(self.id, CONVERSATIONS))
        self._producer = EventProducer()

    def request(self, max_tokens: int = 64) -> InferenceRequested:
        return InferenceRequested(
            conversation_id=self.id,
            user_id="test-user",
            message_id=new_id(),
            response_id=new_id(),
            model="scripted",
            prompt=[ChatTurn(role="user", content="hello")],
            prompt_tokens=5,
            max_tokens=max_tokens,
        )

    async def send(self, topic: Topic, event: Event) -> int:
        """Send an event and return its offset."""
        return (await self._producer.send(topic, event)).offset()

    async def cancel(self, response_id: str) -> None:
        await self.send(CONTROL, GenerationCancelRequested(conversation_id=self.id, user_id="test-user", response_id=response_id))

    async def stream_of(self, response_id: str) -> list[Any]:
        """The token-stream events of a response, through its ResponseEnded."""
        events = await self.tokens.until(lambda e: isinstance(e, ResponseEnded) and e.response_id == response_id)
        return [e for e in events if getattr(e, "response_id", None) == response_id]

    async def outcome_of(self, response_id: str) -> Any:
        """The response's one terminal event on the conversation log."""
        events = await self.history.until(lambda e: getattr(e, "response_id", None) == response_id)
        [outcome] = [e for e in events if getattr(e, "response_id", None) == response_id]
        return outcome

    def close(self) -> None:
        self._producer.close()
        self.tokens.close()
        self.history.close()


@pytest.fixture
def conversation() -> Iterator[Conversation]:
    conversation = Conversation()
    yield conversation
    conversation.close()


def texts(events: list[Any]) -> list[str]:
    return [e.text for e in events if isinstance(e, TokenGenerated)]


def cancelled_in_triton() -> int:
    """Requests the scripted model saw cancelled, from Triton's metrics endpoint."""
    metrics = httpx.get(f"http://{settings.triton.host}:{settings.triton.metrics_port}/metrics").text
    found = re.search(r'steno_requests_total\{model="scripted",outcome="cancelled"\} (\d+)', metrics)
    return int(found.group(1)) if found else 0


# --- the tests ------------------------------------------------------------------------------


async def test_a_request_streams_its_tokens_in_order_then_completes(conversation: Conversation) -> None:
    request = conversation.request()
    async with running_bridge():
        await conversation.send(INFERENCE_REQUESTS, request)
        stream = await conversation.stream_of(request.response_id)
        completed = await conversation.outcome_of(request.response_id)

    assert isinstance(stream[0], ResponseStarted) and stream[0].attempt == 1
    assert texts(stream) == SCRIPT_TOKENS
    assert [e.seq for e in stream if isinstance(e, TokenGenerated)] == list(range(len(SCRIPT_TOKENS)))
    assert isinstance(stream[-1], ResponseEnded)
    assert (stream[-1].outcome, stream[-1].finish_reason) == ("completed", "stop")
    assert len(stream) == len(SCRIPT_TOKENS) + 2
    assert isinstance(completed, ResponseCompleted)
    assert (completed.text, completed.finish_reason, completed.message_id) == (SCRIPT, "stop", request.message_id)
    assert (completed.usage.prompt_tokens, completed.usage.completion_tokens) == (5, len(SCRIPT_TOKENS))


async def test_a_reply_cut_at_max_tokens_finishes_for_length(conversation: Conversation) -> None:
    request = conversation.request(max_tokens=3)
    async with running_bridge():
        await conversation.send(INFERENCE_REQUESTS, request)
        completed = await conversation.outcome_of(request.response_id)

    assert isinstance(completed, ResponseCompleted)
    assert (completed.text, completed.finish_reason) == ("".join(SCRIPT_TOKENS[:3]), "length")


async def test_a_finished_request_is_committed(conversation: Conversation) -> None:
    request = conversation.request()
    async with running_bridge() as bridge:
        offset = await conversation.send(INFERENCE_REQUESTS, request)
        await conversation.outcome_of(request.response_id)
        await committed_past(bridge.group, partition_for(conversation.id, INFERENCE_REQUESTS), offset)


async def test_a_cancel_stops_the_stream_and_keeps_the_partial_text(conversation: Conversation) -> None:
    request = conversation.request(max_tokens=200)
    cancelled_before = cancelled_in_triton()
    async with running_bridge(sampling={"script": LONG_SCRIPT, "itl_ms": 50}):
        await conversation.send(INFERENCE_REQUESTS, request)
        await conversation.tokens.until(lambda e: isinstance(e, TokenGenerated) and e.seq == 2)
        await conversation.cancel(request.response_id)
        stream = await conversation.stream_of(request.response_id)
        cancelled = await conversation.outcome_of(request.response_id)

    assert isinstance(cancelled, ResponseCancelled)
    assert cancelled.text == "".join(texts(stream))
    assert LONG_SCRIPT.startswith(cancelled.text) and 3 <= len(texts(stream)) < 200
    assert isinstance(stream[-1], ResponseEnded) and stream[-1].outcome == "cancelled"
    assert cancelled_in_triton() > cancelled_before, "the model itself stopped generating"


async def test_a_cancel_read_before_its_request_is_applied_when_the_request_arrives(conversation: Conversation) -> None:
    request = conversation.request()
    async with running_bridge():
        await conversation.cancel(request.response_id)
        await conversation.send(INFERENCE_REQUESTS, request)
        stream = await conversation.stream_of(request.response_id)
        cancelled = await conversation.outcome_of(request.response_id)

    assert isinstance(cancelled, ResponseCancelled) and cancelled.text == ""
    assert [type(e) for e in stream] == [ResponseEnded]


@pytest.mark.parametrize(
    ("bridge", "detail"),
    [
        pytest.param({"endpoints": [DEAD_ENDPOINT]}, "unavailable", id="unreachable-endpoint"),
        pytest.param({"sampling": {"fail_after": 2}}, "scripted failure after 2 tokens", id="model-error"),
        pytest.param({"sampling": {"ttft_ms": 5000}, "first_token_timeout_s": 0.5}, "sent nothing for 0.5s", id="timeout"),
    ],
)
async def test_a_failed_generation_is_reported_to_the_client(
    conversation: Conversation, bridge: dict[str, Any], detail: str
) -> None:
    request = conversation.request()
    async with running_bridge(**bridge):
        await conversation.send(INFERENCE_REQUESTS, request)
        stream = await conversation.stream_of(request.response_id)
        failed = await conversation.outcome_of(request.response_id)

    assert isinstance(failed, ResponseFailed) and detail in failed.error
    assert isinstance(stream[-1], ResponseEnded)
    assert (stream[-1].outcome, stream[-1].detail) == ("failed", failed.error)


async def test_a_request_interrupted_by_a_crash_is_retried_by_the_next_bridge(conversation: Conversation) -> None:
    request = conversation.request(max_tokens=200)
    slow = {"script": LONG_SCRIPT, "itl_ms": 20}
    async with running_bridge(sampling=slow) as crashing:
        await conversation.send(INFERENCE_REQUESTS, request)
        await conversation.tokens.until(lambda e: isinstance(e, TokenGenerated) and e.seq == 2)
        await crashing.crash()
        async with running_bridge(group=crashing.group, sampling=slow):
            stream = await conversation.stream_of(request.response_id)
            completed = await conversation.outcome_of(request.response_id)

    restart = next(i for i, e in enumerate(stream) if isinstance(e, ResponseRestarted))
    first_attempt, retry = stream[:restart], stream[restart:]
    assert {e.attempt for e in first_attempt} == {1} and 3 <= len(texts(first_attempt)) < 200
    assert isinstance(retry[1], ResponseStarted) and {e.attempt for e in retry} == {2}
    assert "".join(texts(retry)) == LONG_SCRIPT
    assert isinstance(completed, ResponseCompleted) and (completed.text, completed.attempt) == (LONG_SCRIPT, 2)


async def test_a_request_that_keeps_being_interrupted_is_given_up(conversation: Conversation) -> None:
    request = conversation.request()
    store = redis.Redis.from_url(settings.redis.url)
    await store.set(ATTEMPT_KEY.format(response_id=request.response_id), 3, ex=60)
    await store.aclose()
    async with running_bridge(max_attempts=3):
        await conversation.send(INFERENCE_REQUESTS, request)
        stream = await conversation.stream_of(request.response_id)
        failed = await conversation.outcome_of(request.response_id)

    assert isinstance(failed, ResponseFailed) and "3 attempts" in failed.error
    assert [type(e) for e in stream] == [ResponseEnded]


async def test_an_undecodable_request_is_dead_lettered_and_the_partition_moves_on(conversation: Conversation) -> None:
    request = conversation.request()
    partition = partition_for(conversation.id, INFERENCE_REQUESTS)
    dead_letters = Log(DEAD_LETTERS, 0)
    try:
        async with running_bridge() as bridge:
            bad = await asyncio.to_thread(produce_raw, INFERENCE_REQUESTS, partition, b"{not an event")
            offset = await conversation.send(INFERENCE_REQUESTS, request)
            letters = await dead_letters.until(
                lambda e: isinstance(e, DeadLetter) and (e.source_partition, e.source_offset) == (partition, bad)
            )
            completed = await conversation.outcome_of(request.response_id)
            await committed_past(bridge.group, partition, offset)
    finally:
        dead_letters.close()

    [letter] = [e for e in letters if (e.source_partition, e.source_offset) == (partition, bad)]
    assert (letter.processor, letter.payload) == ("inference_bridge", "{not an event")
    assert letter.reason.startswith("not a steno event")
    assert isinstance(completed, ResponseCompleted)


async def test_no_more_generations_run_at_once_than_allowed(conversation: Conversation) -> None:
    requests = [conversation.request() for _ in range(4)]
    async with running_bridge(sampling={"itl_ms": 50}, max_concurrent=2):
        for request in requests:
            await conversation.send(INFERENCE_REQUESTS, request)
        streams = [await conversation.stream_of(r.response_id) for r in requests]

    spans = [(stream[0].occurred_at, stream[-1].occurred_at) for stream in streams]
    overlaps = [sum(start <= at <= end for start, end in spans) for at, _ in spans]
    assert max(overlaps) == 2
    assert all(stream[-1].outcome == "completed" for stream in streams)
