"""The inference bridge against the real Kafka, Redis and Triton (scripted model).

Each test runs its own bridge in-process, configured for what it checks, on scratch copies of
the bridge's topics: the bridge that `make up` runs never sees these requests, and these bridges
never see anyone else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import httpx
import pytest
import redis.asyncio as redis
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from inference_bridge import attempts
from inference_bridge.attempts import DELIVERIES_KEY, Attempts
from inference_bridge.attempts import KEY as ATTEMPT_KEY
from inference_bridge.control import cancelled_response, starting_positions
from inference_bridge.topics import Topics
from infra import cassandra
from infra.kafka_clients import EventProducer, consumer, next_batch, producer_config, stable_member
from infra.settings import settings
from projections.status import Status
from schemas.events import (
    ChatTurn,
    DeadLetter,
    GenerationCancelRequested,
    InferenceRequested,
    ResponseCancelled,
    ResponseCompleted,
    ResponseEnded,
    ResponseFailed,
    ResponseRestarted,
    ResponseStarted,
    TokenGenerated,
    Usage,
    new_id,
)
from schemas.serde import decode, encode
from schemas.topics import Topic, partition_for
from tests.chaos.faults import freeze_server
from tests.integration.bridge_harness import bridge_process, running_bridge, scratch_topics
from tests.integration.test_projections import Chat, scratch_history

pytestmark = pytest.mark.integration

SCRIPT = "Hello there, friend. How are you today?"
SCRIPT_TOKENS = ["Hello ", "there, ", "friend. ", "How ", "are ", "you ", "today?"]
LONG_SCRIPT = " ".join(f"word{i}" for i in range(200))
SHORT = {"script": SCRIPT}
LONG = {"script": LONG_SCRIPT, "itl_ms": 10}  # 2 s of tokens: time enough to interrupt
# 20 s of tokens: still streaming when a bridge frozen past its session timeout (~7 s) resumes.
# An instant reply can end, its last tokens hurried out, before the freeze: then there is rightly
# nothing to retry.
OUTLASTS_A_FREEZE = {"script": LONG_SCRIPT, "itl_ms": 100}
WAIT_S = 20.0
DEAD_ENDPOINT = "127.0.0.1:9"  # discard: nothing listens there
STALL_S = 1.0  # a token timeout for a hung server's test: the stall, then a readiness probe (1 s)...
HUNG_S = 5.0  # ...both well within the hang
SESSION_TIMEOUT_S = settings.kafka.consumer_session_timeout_ms / 1000


@pytest.fixture
def topics() -> Iterator[Topics]:
    with scratch_topics(f"bridge-{uuid.uuid4().hex[:12]}") as scratch:
        yield scratch


async def committed_past(topic: Topic, group: str, partition: int, offset: int) -> None:
    """Wait until the group has committed the request at `offset` (commits are asynchronous)."""
    client = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": group})
    wanted = [TopicPartition(topic.name, partition)]
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
    return _offset(message)


def _offset(delivered: Message) -> int:
    offset = delivered.offset()
    assert offset is not None, "a delivered message has an offset"
    return offset


# --- talking to it through the log ----------------------------------------------------------


class Log:
    """One partition of a scratch topic, from its start."""

    def __init__(self, topic: Topic, partition: int) -> None:
        self._partition = TopicPartition(topic.name, partition, 0)
        self._consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": "steno-tests"})
        self._consumer.assign([self._partition])
        self._next = 0  # the offset of the next record to read
        self.events: list[Any] = []

    async def until(self, done: Callable[[Any], bool], wait_s: float = WAIT_S) -> list[Any]:
        """Every event read so far, once one of them is `done`."""
        async with asyncio.timeout(wait_s):
            while not any(done(event) for event in self.events):
                await self._read()
        return self.events

    async def read_for(self, seconds: float) -> list[Any]:
        """Every event read so far, after reading on for `seconds` (for what must not come)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self._read()
        return self.events

    async def to_end(self) -> list[Any]:
        """Every event the partition holds now: all there will be, once its writers are gone."""
        _, end = await asyncio.to_thread(self._consumer.get_watermark_offsets, self._partition, 10)
        async with asyncio.timeout(WAIT_S):
            while self._next < end:
                await self._read()
        return self.events

    async def _read(self) -> None:
        for message in await asyncio.to_thread(next_batch, self._consumer, 0.2):
            self.events.append(decode(message.value()))
            self._next = _offset(message) + 1

    def close(self) -> None:
        self._consumer.close()


class Conversation:
    """A conversation on the scratch topics: sends requests and cancels, reads what comes back."""

    def __init__(self, topics: Topics) -> None:
        self.id = f"test-bridge-{new_id()}"
        self.topics = topics
        self.partition = partition_for(self.id, topics.inference_requests)
        self.tokens = Log(topics.tokens, partition_for(self.id, topics.tokens))
        self.history = Log(topics.conversations, partition_for(self.id, topics.conversations))
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

    async def send(self, request: InferenceRequested) -> int:
        """Send the request and return its offset."""
        return _offset(await self._producer.send(self.topics.inference_requests, request))

    async def write(self, topic: Topic, event: Any) -> None:
        """Write an event as another process would (a bridge that died since)."""
        await self._producer.send(topic, event)

    async def cancel(self, response_id: str) -> None:
        cancel = GenerationCancelRequested(conversation_id=self.id, user_id="test-user", response_id=response_id)
        await self._producer.send(self.topics.control, cancel)

    async def stream_of(self, response_id: str) -> list[Any]:
        """The token-stream events of a response, through its ResponseEnded."""
        events = await self.tokens.until(lambda e: isinstance(e, ResponseEnded) and e.response_id == response_id)
        return [e for e in events if e.response_id == response_id]

    async def outcome_of(self, response_id: str) -> Any:
        """The response's one terminal event on the conversation log."""
        events = await self.history.until(lambda e: e.response_id == response_id)
        [outcome] = [e for e in events if e.response_id == response_id]
        return outcome

    def close(self) -> None:
        self._producer.close()
        self.tokens.close()
        self.history.close()


@pytest.fixture
def conversation(topics: Topics) -> Iterator[Conversation]:
    conversation = Conversation(topics)
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


async def test_a_request_streams_its_tokens_in_order_then_completes(topics: Topics, conversation: Conversation) -> None:
    request = conversation.request()
    async with running_bridge(topics, SHORT):
        await conversation.send(request)
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


async def test_a_reply_cut_at_max_tokens_finishes_for_length(topics: Topics, conversation: Conversation) -> None:
    request = conversation.request(max_tokens=3)
    async with running_bridge(topics, SHORT):
        await conversation.send(request)
        completed = await conversation.outcome_of(request.response_id)

    assert isinstance(completed, ResponseCompleted)
    assert (completed.text, completed.finish_reason) == ("".join(SCRIPT_TOKENS[:3]), "length")


async def test_a_finished_request_is_committed(topics: Topics, conversation: Conversation) -> None:
    request = conversation.request()
    async with running_bridge(topics, SHORT) as bridge:
        offset = await conversation.send(request)
        await conversation.outcome_of(request.response_id)
        await committed_past(topics.inference_requests, bridge.group, conversation.partition, offset)


async def test_a_cancel_stops_the_stream_and_keeps_the_partial_text(topics: Topics, conversation: Conversation) -> None:
    request = conversation.request(max_tokens=200)
    cancelled_before = cancelled_in_triton()
    async with running_bridge(topics, LONG):
        await conversation.send(request)
        await conversation.tokens.until(lambda e: isinstance(e, TokenGenerated) and e.seq == 2)
        await conversation.cancel(request.response_id)
        stream = await conversation.stream_of(request.response_id)
        cancelled = await conversation.outcome_of(request.response_id)

    assert isinstance(cancelled, ResponseCancelled)
    assert cancelled.text == "".join(texts(stream))
    assert LONG_SCRIPT.startswith(cancelled.text) and 3 <= len(texts(stream)) < 200
    assert isinstance(stream[-1], ResponseEnded) and stream[-1].outcome == "cancelled"
    assert cancelled_in_triton() > cancelled_before, "the model itself stopped generating"


async def test_a_cancel_read_before_its_request_is_applied_when_the_request_arrives(
    topics: Topics, conversation: Conversation
) -> None:
    request = conversation.request()
    async with running_bridge(topics, SHORT):
        await conversation.cancel(request.response_id)
        await conversation.send(request)
        stream = await conversation.stream_of(request.response_id)
        cancelled = await conversation.outcome_of(request.response_id)

    assert isinstance(cancelled, ResponseCancelled) and cancelled.text == ""
    assert [type(e) for e in stream] == [ResponseEnded]


class CancelSentBetweenLookups:
    """A real consumer, but a user's cancel is produced, and acknowledged, right after the first
    of its offset lookups returns: the moment a bridge starts as a user stops a reply."""

    def __init__(self, client: Consumer, send: Callable[[], None]) -> None:
        self._client = client
        self._send: Callable[[], None] | None = send

    def get_watermark_offsets(self, *args: Any, **kwargs: Any) -> Any:
        return self._then_send(self._client.get_watermark_offsets(*args, **kwargs))

    def offsets_for_times(self, *args: Any, **kwargs: Any) -> Any:
        return self._then_send(self._client.offsets_for_times(*args, **kwargs))

    def _then_send(self, result: Any) -> Any:
        if self._send is not None:
            self._send()
            self._send = None
        return result


def test_a_cancel_sent_while_a_starting_bridge_looks_up_where_to_read_is_read(topics: Topics) -> None:
    """The control consumer's start (`control.starting_positions`) reads each partition's end and
    looks up its messages since the lookback; a cancel produced between the two is still read."""
    conversation_id = f"test-bridge-{new_id()}"
    cancel = GenerationCancelRequested(conversation_id=conversation_id, user_id="test-user", response_id=new_id())
    producer = Producer(producer_config())

    def send() -> None:
        key = conversation_id.encode()
        producer.produce(topics.control.name, encode(cancel), key, partition_for(conversation_id, topics.control))
        assert producer.flush(WAIT_S) == 0, "the cancel was not acknowledged"

    client = consumer(f"steno-test-control-{new_id()}")
    try:
        looking_up = cast(Consumer, CancelSentBetweenLookups(client, send))
        client.assign(starting_positions(looking_up, topics.control, since_ms=int((time.time() - 600) * 1000)))
        read: list[str | None] = []
        deadline = time.monotonic() + WAIT_S
        while cancel.response_id not in read and time.monotonic() < deadline:
            read += [cancelled_response(message) for message in next_batch(client, timeout_s=0.5)]
    finally:
        client.close()
    assert cancel.response_id in read, "the control consumer started after the cancel"


@pytest.mark.parametrize(
    ("scripted", "config", "detail"),
    [
        pytest.param(
            SHORT, {"endpoints": [DEAD_ENDPOINT], "retry_budget_s": 1.0}, "again within 1s", id="unreachable-endpoint"
        ),
        pytest.param({**SHORT, "fail_after": 2}, {}, "scripted failure after 2 tokens", id="model-error"),
        pytest.param({**SHORT, "ttft_ms": 5000}, {"first_token_timeout_s": 0.5}, "sent nothing for 0.5s", id="timeout"),
        pytest.param(
            {**SHORT, "itl_ms": 60_000},
            {"first_token_timeout_s": 60.0, "token_timeout_s": 0.5},
            "sent nothing for 0.5s",
            id="timeout-after-the-first-token",
        ),
    ],
)
async def test_a_failed_generation_is_reported_to_the_client(
    topics: Topics, conversation: Conversation, scripted: dict[str, Any], config: dict[str, Any], detail: str
) -> None:
    request = conversation.request()
    async with running_bridge(topics, scripted, **config):
        await conversation.send(request)
        stream = await conversation.stream_of(request.response_id)
        failed = await conversation.outcome_of(request.response_id)

    assert isinstance(failed, ResponseFailed) and detail in failed.error
    assert isinstance(stream[-1], ResponseEnded)
    assert (stream[-1].outcome, stream[-1].detail) == ("failed", failed.error)


async def test_a_request_interrupted_by_a_crash_is_retried_by_the_next_bridge(
    topics: Topics, conversation: Conversation
) -> None:
    request = conversation.request(max_tokens=200)
    async with running_bridge(topics, LONG) as crashing:
        await conversation.send(request)
        await conversation.tokens.until(lambda e: isinstance(e, TokenGenerated) and e.seq == 2)
        await crashing.crash()
        async with running_bridge(topics, LONG, group=crashing.group):
            stream = await conversation.stream_of(request.response_id)
            completed = await conversation.outcome_of(request.response_id)

    restart = next(i for i, e in enumerate(stream) if isinstance(e, ResponseRestarted))
    first_attempt, retry = stream[:restart], stream[restart:]
    assert {e.attempt for e in first_attempt} == {1} and 3 <= len(texts(first_attempt)) < 200
    assert isinstance(retry[1], ResponseStarted) and {e.attempt for e in retry} == {2}
    assert "".join(texts(retry)) == LONG_SCRIPT
    assert isinstance(completed, ResponseCompleted) and (completed.text, completed.attempt) == (LONG_SCRIPT, 2)


@pytest.mark.chaos
async def test_a_reply_stalled_by_a_hung_server_starts_over_once_the_server_answers(
    topics: Topics, conversation: Conversation
) -> None:
    """Triton's processes stopped mid-reply (SIGSTOP: connections open, nothing answered) past the
    token timeout: a stall whose server does not answer its readiness probe either is the
    server's, not the model's, so the reply starts over once the server is back, as after a
    crash (the model's own stalls, its server answering, fail the reply: see above)."""
    request = conversation.request(max_tokens=200)
    hang = freeze_server("triton", HUNG_S)
    async with running_bridge(topics, LONG, token_timeout_s=STALL_S):
        await conversation.send(request)
        await conversation.tokens.until(lambda e: isinstance(e, TokenGenerated) and e.seq == 2)
        hang.strike()
        await asyncio.to_thread(hang.recover, set())
        stream = await conversation.stream_of(request.response_id)
        outcome = await conversation.outcome_of(request.response_id)

    assert isinstance(outcome, ResponseCompleted), f"the reply ended {outcome}"
    restart = next(i for i, e in enumerate(stream) if isinstance(e, ResponseRestarted))
    assert {e.attempt for e in stream[restart:]} == {2}
    assert "".join(texts(stream[restart:])) == LONG_SCRIPT == outcome.text


async def test_a_request_redelivered_after_its_reply_ended_is_not_answered_again(
    topics: Topics, conversation: Conversation
) -> None:
    """A bridge that died after its final events but before its commit: the request comes again."""
    request = conversation.request()
    async with running_bridge(topics, SHORT) as bridge:
        await conversation.send(request)
        first = await conversation.stream_of(request.response_id)
        redelivered = await conversation.send(request)
        await committed_past(topics.inference_requests, bridge.group, conversation.partition, redelivered)
        marker = conversation.request()  # sent after the redelivery, in the same partition
        await conversation.send(marker)
        await conversation.stream_of(marker.response_id)
        await conversation.outcome_of(marker.response_id)

    again = [e for e in conversation.tokens.events if getattr(e, "response_id", None) == request.response_id]
    assert again == first, "the redelivered request must write no event"
    outcomes = [e for e in conversation.history.events if e.response_id == request.response_id]
    assert len(outcomes) == 1


async def test_a_request_whose_bridge_died_between_its_final_events_gets_only_the_missing_end(
    topics: Topics, conversation: Conversation
) -> None:
    """The bridge died after its ResponseCompleted landed and before its ResponseEnded: the next
    one must not answer again (a second final event in history, a `restart` after the reply) but
    end the stream the first one left open."""
    request = conversation.request()
    client = redis.Redis.from_url(settings.redis.url)
    attempts = Attempts(client)
    try:
        begun = await attempts.begin(request.response_id)  # the dead bridge's attempt
        assert begun is not None and await attempts.ending(request.response_id, begun.attempt)
    finally:
        await client.aclose()
    landed = ResponseCompleted(
        conversation_id=conversation.id,
        user_id="test-user",
        message_id=request.message_id,
        response_id=request.response_id,
        text="Hello",
        finish_reason="stop",
        usage=Usage(prompt_tokens=5, completion_tokens=1),
        attempt=begun.attempt,
    )
    await conversation.write(topics.conversations, landed)
    async with running_bridge(topics, SHORT):
        await conversation.send(request)
        stream = await conversation.stream_of(request.response_id)
        marker = conversation.request()  # after it in the same partition: answered once it was handled
        await conversation.send(marker)
        await conversation.outcome_of(marker.response_id)

    [ended] = stream
    assert isinstance(ended, ResponseEnded)
    assert (ended.outcome, ended.finish_reason, ended.attempt, ended.usage) == ("completed", "stop", 1, landed.usage)
    outcomes = [e for e in conversation.history.events if e.response_id == request.response_id]
    assert outcomes == [landed]


async def test_a_reply_recorded_in_history_has_every_token_in_the_log_whatever_kills_its_bridge(
    topics: Topics, conversation: Conversation
) -> None:
    """A final event vouches for its reply's tokens. The bridge's batching producer holds a reply's
    tokens after its first (here for 2 s); a bridge killed the moment its ResponseCompleted landed
    must not leave history's text longer than the token stream, which its successor, finding the
    final event, would never complete (it writes only the stream's end)."""
    request = conversation.request()
    group = f"steno-bridge-test-{uuid.uuid4().hex}"
    with bridge_process(topics, group, SHORT, token_linger_ms=2000) as process:
        await conversation.send(request)
        completed = await conversation.outcome_of(request.response_id)
        process.kill()

    logged = [e for e in await conversation.tokens.to_end() if e.response_id == request.response_id]
    assert isinstance(completed, ResponseCompleted) and completed.text == SCRIPT
    assert texts(logged) == SCRIPT_TOKENS


async def test_a_stopping_bridge_finishes_its_generations_first(topics: Topics, conversation: Conversation) -> None:
    request = conversation.request(max_tokens=200)
    async with running_bridge(topics, LONG) as bridge:
        offset = await conversation.send(request)
        await conversation.tokens.until(lambda e: isinstance(e, TokenGenerated) and e.seq == 2)
        await bridge.stop()
        await committed_past(topics.inference_requests, bridge.group, conversation.partition, offset)

    completed = await conversation.outcome_of(request.response_id)
    assert isinstance(completed, ResponseCompleted) and completed.text == LONG_SCRIPT


async def test_a_request_that_keeps_being_interrupted_is_given_up(topics: Topics, conversation: Conversation) -> None:
    request = conversation.request()
    store = redis.Redis.from_url(settings.redis.url)
    for key in (ATTEMPT_KEY, DELIVERIES_KEY):  # three bridges died on it
        await store.set(key.format(response_id=request.response_id), 3, ex=60)
    await store.aclose()
    async with running_bridge(topics, SHORT, max_attempts=3):
        await conversation.send(request)
        stream = await conversation.stream_of(request.response_id)
        failed = await conversation.outcome_of(request.response_id)

    assert isinstance(failed, ResponseFailed) and "3 attempts" in failed.error
    assert [type(e) for e in stream] == [ResponseEnded]


async def test_an_undecodable_request_is_dead_lettered_and_the_partition_moves_on(
    topics: Topics, conversation: Conversation
) -> None:
    request = conversation.request()
    dead_letters = Log(topics.dead_letters, 0)
    try:
        async with running_bridge(topics, SHORT) as bridge:
            bad = await asyncio.to_thread(produce_raw, topics.inference_requests, conversation.partition, b"{oops")
            offset = await conversation.send(request)
            [letter] = await dead_letters.until(lambda e: isinstance(e, DeadLetter))
            completed = await conversation.outcome_of(request.response_id)
            await committed_past(topics.inference_requests, bridge.group, conversation.partition, offset)
    finally:
        dead_letters.close()

    assert (letter.source_partition, letter.source_offset) == (conversation.partition, bad)
    assert (letter.processor, letter.payload) == ("inference_bridge", "{oops")
    assert letter.reason.startswith("not a steno event")
    assert isinstance(completed, ResponseCompleted)


async def test_no_more_generations_run_at_once_than_allowed(topics: Topics, conversation: Conversation) -> None:
    requests = [conversation.request() for _ in range(4)]
    async with running_bridge(topics, {**SHORT, "itl_ms": 50}, max_concurrent=2):
        for request in requests:
            await conversation.send(request)
        streams = [await conversation.stream_of(r.response_id) for r in requests]

    spans = [(stream[0].occurred_at, stream[-1].occurred_at) for stream in streams]
    overlaps = [sum(start <= at <= end for start, end in spans) for at, _ in spans]
    assert max(overlaps) == 2
    assert all(stream[-1].outcome == "completed" for stream in streams)


# --- one generation at a time per response, across bridges and crashes -----------------------


def attempts_in_order(stream: list[Any]) -> list[int]:
    """The attempt numbers as the stream shows them, one entry per run of equal numbers."""
    runs: list[int] = []
    for event in stream:
        if not runs or runs[-1] != event.attempt:
            runs.append(event.attempt)
    return runs


def assert_clean_retries(stream: list[Any], outcomes: list[Any]) -> None:
    """Attempt 1, then each retry after a restart, never an older attempt's event after a newer
    one began; the last attempt streams the whole reply and is the one outcome in history."""
    attempts = attempts_in_order(stream)
    assert attempts[0] == 1 and len(attempts) >= 2
    assert attempts == sorted(set(attempts)), "no event of an attempt after a newer one began"
    last = stream[len(stream) - [isinstance(e, ResponseRestarted) for e in reversed(stream)].index(True) - 1 :]
    assert [type(e) for e in last[:2]] == [ResponseRestarted, ResponseStarted]
    assert [e.seq for e in last if isinstance(e, TokenGenerated)] == list(range(len(texts(last))))
    assert "".join(texts(last)) == LONG_SCRIPT
    [outcome] = outcomes
    assert isinstance(outcome, ResponseCompleted)
    assert (outcome.text, outcome.attempt) == (LONG_SCRIPT, attempts[-1])


async def everything_of(conversation: Conversation, response_id: str, settle_s: float) -> tuple[list[Any], list[Any]]:
    """The response's token-stream events and terminal events, once it ended and `settle_s` more
    passed without anything else (a stray attempt would write within that)."""
    await conversation.stream_of(response_id)
    await conversation.outcome_of(response_id)
    tokens, history = await asyncio.gather(
        conversation.tokens.read_for(settle_s), conversation.history.read_for(settle_s)
    )
    mine = [e for e in tokens if getattr(e, "response_id", None) == response_id]
    return mine, [e for e in history if e.response_id == response_id]


def time_of(stream: list[Any], found: Callable[[Any], bool]) -> float:
    return next(e for e in stream if found(e)).occurred_at.timestamp()


async def test_a_request_written_twice_is_generated_once(topics: Topics, conversation: Conversation) -> None:
    """A processor that crashed after writing a request writes it again: same response id."""
    request = conversation.request(max_tokens=200)
    async with running_bridge(topics, LONG):
        await conversation.send(request)
        await conversation.tokens.until(lambda e: isinstance(e, TokenGenerated) and e.seq == 2)
        await conversation.send(request)
        stream = await conversation.stream_of(request.response_id)
        marker = conversation.request()  # after the copy, in the same partition: answered once the copy is
        await conversation.send(marker)
        await conversation.stream_of(marker.response_id)
        await conversation.outcome_of(marker.response_id)

    stream = [e for e in conversation.tokens.events if getattr(e, "response_id", None) == request.response_id]
    assert {e.attempt for e in stream} == {1}, "the copy started no attempt of its own"
    assert [e.seq for e in stream if isinstance(e, TokenGenerated)] == list(range(200))
    assert sum(isinstance(e, ResponseEnded) for e in stream) == 1
    outcomes = [e for e in conversation.history.events if e.response_id == request.response_id]
    assert len(outcomes) == 1 and outcomes[0].text == LONG_SCRIPT


async def test_a_reply_cut_by_an_unreachable_endpoint_is_retried_on_another(
    topics: Topics, conversation: Conversation
) -> None:
    request = conversation.request()
    endpoints = [DEAD_ENDPOINT, *settings.triton.bridge_endpoints]  # the dead one is leased first
    async with running_bridge(topics, SHORT, endpoints=endpoints):
        await conversation.send(request)
        stream = await conversation.stream_of(request.response_id)
        completed = await conversation.outcome_of(request.response_id)

    assert [type(e) for e in stream[:3]] == [ResponseStarted, ResponseRestarted, ResponseStarted]
    assert texts(stream) == SCRIPT_TOKENS and {e.attempt for e in stream[1:]} == {2}
    assert isinstance(completed, ResponseCompleted) and (completed.text, completed.attempt) == (SCRIPT, 2)


async def test_a_killed_bridges_reply_is_continued_by_its_restarted_successor(
    topics: Topics, conversation: Conversation
) -> None:
    """kill -9 mid-reply, a new bridge started at once in the group (what the supervisor does)."""
    request = conversation.request(max_tokens=200)
    group = f"steno-bridge-test-{uuid.uuid4().hex}"
    with bridge_process(topics, group, LONG) as process:
        await conversation.send(request)
        await conversation.tokens.until(lambda e: isinstance(e, TokenGenerated) and e.seq == 2)
        process.kill()
        killed_at = time.time()
    async with running_bridge(topics, LONG, group=group):
        stream, outcomes = await everything_of(conversation, request.response_id, settle_s=1.0)

    assert_clean_retries(stream, outcomes)
    restart = time_of(stream, lambda e: isinstance(e, ResponseRestarted)) - killed_at
    first_token = time_of(stream, lambda e: isinstance(e, TokenGenerated) and e.attempt == 2) - killed_at
    print(f"\nkill -9 -> restart event {restart:.2f}s, -> attempt 2's first token {first_token:.2f}s")
    assert first_token <= 10.0, "the failover budget"


async def test_a_stopped_bridge_finishes_its_reply_then_leaves(topics: Topics, conversation: Conversation) -> None:
    request = conversation.request(max_tokens=200)
    group = f"steno-bridge-test-{uuid.uuid4().hex}"
    with bridge_process(topics, group, LONG) as process:
        offset = await conversation.send(request)
        await conversation.tokens.until(lambda e: isinstance(e, TokenGenerated) and e.seq == 2)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, WAIT_S) == 0
    await committed_past(topics.inference_requests, group, conversation.partition, offset)

    stream = await conversation.stream_of(request.response_id)
    assert {e.attempt for e in stream} == {1} and "".join(texts(stream)) == LONG_SCRIPT
    completed = await conversation.outcome_of(request.response_id)
    assert isinstance(completed, ResponseCompleted) and completed.text == LONG_SCRIPT


async def test_a_stopped_bridge_hands_over_what_does_not_finish_in_its_drain_time(
    topics: Topics, conversation: Conversation
) -> None:
    """SIGTERM with a reply longer than the drain time: the next bridge retries it at once,
    not after a session timeout, because the stopped one left the group."""
    request = conversation.request(max_tokens=200)
    group = f"steno-bridge-test-{uuid.uuid4().hex}"
    slow = {**LONG, "itl_ms": 50}  # 10 s of tokens
    with bridge_process(topics, group, slow, drain_s=1.0) as process:
        await conversation.send(request)
        await conversation.tokens.until(lambda e: isinstance(e, TokenGenerated) and e.seq == 2)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, WAIT_S) == 0
        left_at = time.time()
    async with running_bridge(topics, LONG, group=group):
        stream, outcomes = await everything_of(conversation, request.response_id, settle_s=1.0)

    assert_clean_retries(stream, outcomes)
    handed_over = time_of(stream, lambda e: isinstance(e, ResponseRestarted)) - left_at
    print(f"\nSIGTERM, drained 1 s, exited -> restart event on the next bridge {handed_over:.2f}s")
    assert handed_over < SESSION_TIMEOUT_S, "it left the group: nobody waited for its session to time out"


async def test_a_frozen_bridge_that_comes_back_writes_nothing_more(topics: Topics, conversation: Conversation) -> None:
    """SIGSTOP past the session timeout: another bridge takes the reply over; SIGCONT: the
    frozen one must not go on with its attempt, nor end the reply a second time."""
    request = conversation.request(max_tokens=200)
    group = f"steno-bridge-test-{uuid.uuid4().hex}"
    slow = {**LONG, "itl_ms": 50}  # 10 s of tokens: attempt 1 is still streaming when it wakes
    with bridge_process(topics, group, slow) as process:
        await conversation.send(request)
        await conversation.tokens.until(lambda e: isinstance(e, TokenGenerated) and e.seq == 2)
        process.send_signal(signal.SIGSTOP)
        async with running_bridge(topics, slow, group=group):
            await conversation.tokens.until(lambda e: isinstance(e, ResponseRestarted))
            process.send_signal(signal.SIGCONT)
            stream, outcomes = await everything_of(conversation, request.response_id, settle_s=3.0)

    assert_clean_retries(stream, outcomes)


async def test_a_bridge_back_from_a_freeze_retries_only_once_its_abandoned_attempt_is_in_the_log(
    topics: Topics, conversation: Conversation
) -> None:
    """SIGSTOP past the session timeout, SIGCONT: the bridge abandons its attempt and gets the
    request back at once, while that attempt's tokens are still queued in its batching producer
    (held 25 s by its linger here, as a Kafka that is down holds them). Its two producers keep no
    order between them: the retry must wait for those tokens, or its restart lands before them."""
    events, response_id = await a_retry_after_freezes(topics, conversation, freezes=1, linger_ms=25_000)
    assert late_tokens_of_the_first_attempt(events, response_id) == []


async def test_a_retry_abandoned_while_it_waits_for_its_abandoned_attempt_still_waits_when_retried(
    topics: Topics, conversation: Conversation
) -> None:
    """As above, then frozen a second time while the retry waits for the first attempt's tokens
    (held 40 s by the linger): the retry is abandoned in turn, and the next one must still wait
    for them. It did not: taking the retry up had dropped the bridge's record of them."""
    events, response_id = await a_retry_after_freezes(topics, conversation, freezes=2, linger_ms=40_000)
    assert late_tokens_of_the_first_attempt(events, response_id) == []


async def a_retry_after_freezes(
    topics: Topics, conversation: Conversation, *, freezes: int, linger_ms: int
) -> tuple[list[Any], str]:
    """A bridge process frozen past its session timeout right after a reply's first token, then
    again each time it is back in its group, `freezes` times: the token stream's events up to the
    retry's second token, and the reply's response id."""
    request = conversation.request(max_tokens=200)
    group = f"steno-bridge-test-{uuid.uuid4().hex}"
    with bridge_process(topics, group, OUTLASTS_A_FREEZE, token_linger_ms=linger_ms) as process:
        await conversation.send(request)
        await conversation.tokens.until(lambda e: isinstance(e, TokenGenerated) and e.seq == 0)
        for freeze in range(freezes):
            if freeze > 0:  # back in its group: the retry waits for the abandoned attempt's tokens
                while not await asyncio.to_thread(stable_member, group, process.pid):  # noqa: ASYNC110
                    await asyncio.sleep(0.5)
            await frozen_past_its_session(group, process)
        return await conversation.tokens.until(second_token_of_a_retry, wait_s=90), request.response_id


async def frozen_past_its_session(group: str, process: subprocess.Popen) -> None:
    """SIGSTOP the bridge until its group has dropped it (Kafka's view, polled), then SIGCONT."""
    process.send_signal(signal.SIGSTOP)
    while await asyncio.to_thread(stable_member, group, process.pid):  # noqa: ASYNC110
        await asyncio.sleep(0.5)
    process.send_signal(signal.SIGCONT)


def late_tokens_of_the_first_attempt(events: list[Any], response_id: str) -> list[tuple[int, int]]:
    """Attempt 1's tokens that landed after the retry's restart event: none may."""
    stream = [e for e in events if e.response_id == response_id]
    restart = next(i for i, e in enumerate(stream) if isinstance(e, ResponseRestarted))
    return [(e.attempt, e.seq) for e in stream[restart:] if isinstance(e, TokenGenerated) and e.attempt == 1]


def second_token_of_a_retry(event: Any) -> bool:
    """It comes through the same batching producer as an abandoned attempt's queued tokens, after
    them: once it is in the log, all of theirs are."""
    return isinstance(event, TokenGenerated) and event.attempt > 1 and event.seq == 1


async def test_history_keeps_the_later_attempts_outcome_whole_in_either_order() -> None:
    """Both attempts of a reply ended it (the frozen bridge above, had it no fence): on the real
    Cassandra the row is attempt 2's, never attempt 1's status beside attempt 2's text."""
    cluster, _ = cassandra.connect(timeout_s=30.0)
    chat = Chat()
    message = chat.submit("q")
    failed = chat.fail(message).model_copy(update={"attempt": 1})
    completed = chat.complete(message, "the whole answer").model_copy(update={"attempt": 2})
    try:
        with scratch_history(cluster) as history:
            for outcomes in ([failed, completed], [completed, failed]):
                await history.apply_all([chat.start(), message, chat.accept(message), *outcomes])
                reply = {m.message_id: m for m in await history.messages(chat.conversation_id)}[message.response_id]
                assert (reply.status, reply.content, reply.detail) == (Status.COMPLETED, "the whole answer", None)
    finally:
        cluster.shutdown()


async def test_the_attempt_check_is_skipped_while_redis_is_unreachable() -> None:
    """A Redis restart mid-reply must not stop the bridge or fail the reply at a fence check."""
    unreachable = redis.Redis.from_url("redis://127.0.0.1:9/0")  # discard port: nothing listens
    try:
        assert await Attempts(unreachable).current(new_id()) is None
    finally:
        await unreachable.aclose()


async def test_a_response_marked_finished_while_redis_is_paused_fails_instead_of_hanging() -> None:
    """A stalled Redis (SIGSTOP: connections open, nothing answers) must fail `finish` as a Redis
    that is down does, stopping the bridge, not hold the generation, and with it a revocation's
    wait (`Bridge._abandon`) and the bridge's place in its group. Without the client's bound the
    call waits until Redis resumes."""
    client = attempts.connect(settings.redis.url)
    redis_pid = int((settings.stack.run_dir / "redis.pid").read_text().strip())
    try:
        await client.ping()  # connected before the pause
        os.kill(redis_pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(Attempts(client).finish(new_id()), attempts.REPLY_TIMEOUT_S * 3)
            waited = time.monotonic() - began
        finally:
            os.kill(redis_pid, signal.SIGCONT)
    finally:
        await client.aclose()
    assert waited < attempts.REPLY_TIMEOUT_S * 2


async def test_a_generation_cancelled_in_the_middle_of_a_redis_command_is_cancelled() -> None:
    """An abandoned generation is cancelled wherever it waits, often in a fence check (the first
    thing it does on waking from a freeze). Under redis-py's `socket_timeout` a third to a half of such
    cancellations were lost: the command returned its reply and the generation ran on."""
    client = attempts.connect(settings.redis.url)
    record = Attempts(client)
    response_id = new_id()
    commands = (
        lambda: record.current(response_id),
        lambda: record.begin(response_id),
        lambda: record.ending(response_id, 1),
    )
    lost: list[int] = []
    try:
        await client.ping()
        for trial in range(600):
            command = asyncio.create_task(commands[trial % len(commands)]())
            for _ in range(trial % 7):  # cancelled at different points of the round trip
                await asyncio.sleep(0)
            if command.cancel():
                with contextlib.suppress(asyncio.CancelledError):
                    await command
                    lost.append(trial)
    finally:
        await client.delete(
            *(key.format(response_id=response_id) for key in (ATTEMPT_KEY, DELIVERIES_KEY, attempts.ENDING_KEY))
        )
        await client.aclose()
    assert lost == [], f"{len(lost)} of 600 cancellations lost"


async def test_a_reply_that_ended_while_redis_was_paused_is_not_answered_again(
    topics: Topics, conversation: Conversation
) -> None:
    """Redis paused as a reply ends: its fence check is skipped (no `ending` mark), its final
    events land, marking it finished fails and the bridge process stops. Its successor gets the
    request again and must find the reply in the log, not answer a second time."""
    request = conversation.request(max_tokens=200)
    group = f"steno-bridge-test-{uuid.uuid4().hex}"
    redis_pid = int((settings.stack.run_dir / "redis.pid").read_text().strip())
    with bridge_process(topics, group, LONG) as process:
        await conversation.send(request)
        await conversation.tokens.until(
            lambda e: isinstance(e, ResponseStarted) and e.response_id == request.response_id
        )
        os.kill(redis_pid, signal.SIGSTOP)
        try:
            await conversation.outcome_of(request.response_id)
            await asyncio.to_thread(process.wait, WAIT_S)  # stopped: `finish` failed
        finally:
            os.kill(redis_pid, signal.SIGCONT)
    async with running_bridge(topics, LONG, group=group):
        marker = conversation.request(max_tokens=1)  # after it in the same partition: answered once it was handled
        await conversation.send(marker)
        await conversation.outcome_of(marker.response_id)
        stream = await conversation.stream_of(request.response_id)

    outcomes = [e for e in conversation.history.events if e.response_id == request.response_id]
    assert len(outcomes) == 1 and isinstance(outcomes[0], ResponseCompleted), "answered once"
    assert not any(isinstance(e, ResponseRestarted) for e in stream), "no restart after the reply's end"


async def test_a_bridge_joining_takes_over_only_the_replies_of_the_partitions_it_gets(topics: Topics) -> None:
    """Cooperative rebalancing: a second bridge gets half the partitions; the replies on the
    other half stream on undisturbed (eager rebalancing restarted all of them)."""
    partitions = topics.inference_requests.partitions
    conversations: dict[int, Conversation] = {}
    while len(conversations) < partitions:
        conversation = Conversation(topics)
        conversations.setdefault(conversation.partition, conversation)
    slow = {**LONG, "itl_ms": 50}  # 10 s of tokens
    requests = {p: c.request(max_tokens=200) for p, c in conversations.items()}
    try:
        async with running_bridge(topics, slow) as first:
            for partition, conversation in conversations.items():
                await conversation.send(requests[partition])
            for conversation in conversations.values():
                await conversation.tokens.until(lambda e: isinstance(e, TokenGenerated) and e.seq == 2)
            async with running_bridge(topics, slow, group=first.group):
                streams = {p: await c.stream_of(requests[p].response_id) for p, c in conversations.items()}
    finally:
        for conversation in conversations.values():
            conversation.close()

    restarted = sorted(p for p, stream in streams.items() if any(isinstance(e, ResponseRestarted) for e in stream))
    assert len(restarted) == partitions // 2, f"replies restarted on partitions {restarted}"
    assert all(stream[-1].outcome == "completed" for stream in streams.values())
