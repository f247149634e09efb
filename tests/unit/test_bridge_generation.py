"""One request's events: what the log gets for each way a generation can end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from datetime import timedelta
from typing import Any

import pytest

from inference_bridge.attempts import Begun
from inference_bridge.final_events import Landed
from inference_bridge.generation import EARLY_START_S, FENCE_CHECK_S, Generation, TextStream
from inference_bridge.topics import Topics
from inference_bridge.triton_stream import InferenceError
from schemas.events import (
    ChatTurn,
    Event,
    InferenceRequested,
    ResponseCancelled,
    ResponseCompleted,
    ResponseEnded,
    ResponseFailed,
    ResponseRestarted,
    ResponseStarted,
    TokenGenerated,
    Usage,
    utc_now,
)
from schemas.serde import decode
from schemas.topics import CONVERSATIONS, TOKENS, Topic

REQUEST = InferenceRequested(
    conversation_id="c1",
    user_id="u1",
    message_id="m1",
    response_id="r1",
    model="scripted",
    prompt=[ChatTurn(role="user", content="hi")],
    prompt_tokens=7,
    max_tokens=10,
)


class FakeLog:
    """Records sends (the encoded ones decoded, as a reader of the log would); acknowledges them at
    once unless told to hold the acks."""

    def __init__(self, hold_acks: bool = False) -> None:
        self.sent: list[tuple[str, Event]] = []
        self.unacked: list[asyncio.Future[None]] = []
        self.finished = asyncio.Event()  # the conversation log's final event was sent
        self.hurried = 0  # times asked to send lingering events soon
        self._hold_acks = hold_acks

    def sender(self, topic: Topic, conversation_id: str) -> Callable[[bytes], asyncio.Future[None]]:
        def send(raw: bytes) -> asyncio.Future[None]:
            event = decode(raw)
            assert isinstance(event, TokenGenerated) and event.conversation_id == conversation_id
            return self.produce(topic, event)

        return send

    def hurry(self) -> None:
        self.hurried += 1

    def produce(self, topic: Topic, event: Event) -> asyncio.Future[None]:
        self.sent.append((topic.name, event))
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._hold_acks:
            self.unacked.append(ack)
        else:
            ack.set_result(None)
        if isinstance(event, ResponseCompleted | ResponseFailed | ResponseCancelled):
            self.finished.set()
        return ack

    def acknowledge(self) -> None:
        """Kafka acknowledges every event held so far."""
        for ack in self.unacked:
            if not ack.done():
                ack.set_result(None)

    def types(self, topic: Topic) -> list[str]:
        return [type(event).__name__ for name, event in self.sent if name == topic.name]

    def last(self, topic: Topic) -> Event:
        return [event for name, event in self.sent if name == topic.name][-1]


class Model:
    """A fake model stream: some pieces, then an error, the end, or a hang until closed."""

    def __init__(self, *pieces: str, error: Exception | None = None, hang: bool = False) -> None:
        self.pieces = pieces
        self.error = error
        self.hang = hang
        self.hanging = asyncio.Event()
        self.asked = asyncio.Event()  # the stream was opened: the model is generating
        self.closed = False

    async def __call__(self, request: InferenceRequested) -> AsyncGenerator[str, None]:
        self.asked.set()
        try:
            for piece in self.pieces:
                yield piece
            if self.error:
                raise self.error
            if self.hang:
                self.hanging.set()
                await asyncio.Event().wait()
        finally:
            self.closed = True


class Attempts:
    """The attempt record as Redis keeps it for the bridge (inference_bridge.attempts), in memory:
    each `begin` counts one more attempt and delivery (the first returns `attempt`, as the
    `attempt`-th delivery), each `retry` one more attempt."""

    def __init__(self, attempt: int | None, delivery: int | None = None, ending_since_ms: int | None = None) -> None:
        self.attempt = attempt
        self.ending_since_ms = ending_since_ms
        self.newest = 0 if attempt is None else attempt - 1
        self.deliveries = self.newest if delivery is None else delivery - 1
        self.finished: list[str] = []
        self.endings: list[int] = []  # the attempts that began writing their final events

    async def begin(self, response_id: str) -> Begun | None:
        assert response_id == REQUEST.response_id
        self.deliveries += 1
        attempt = await self.retry(response_id)
        return None if attempt is None else Begun(attempt, self.deliveries, self.ending_since_ms)

    async def retry(self, response_id: str) -> int | None:
        self.newest += 1
        return None if self.attempt is None else self.newest

    async def current(self, response_id: str) -> int | None:
        return self.newest

    async def ending(self, response_id: str, attempt: int) -> bool | None:
        self.endings.append(attempt)
        return self.newest <= attempt

    async def finish(self, response_id: str) -> None:
        self.finished.append(response_id)


class SlowAttempts(Attempts):
    """An attempt record whose `begin` answers only once the model was asked for the reply: a
    generation that opened the model's stream only after numbering its attempt never finishes."""

    def __init__(self, model: Model, attempt: int | None, **kwargs: Any) -> None:
        super().__init__(attempt, **kwargs)
        self._model = model

    async def begin(self, response_id: str) -> Begun | None:
        await self._model.asked.wait()
        return await super().begin(response_id)


class Finals:
    """The log as an attempt that died while ending left it: `landed`, or nothing."""

    def __init__(self, landed: Landed | None) -> None:
        self._landed = landed
        self.asked: list[int] = []

    async def landed(self, request: InferenceRequested, since_ms: int) -> Landed | None:
        self.asked.append(since_ms)
        return self._landed


class Fleet:
    """`recover` over a fleet that is back after `down_for` probes (never, for None)."""

    def __init__(self, down_for: int | None = 0) -> None:
        self.down_for = down_for
        self.waits = 0

    async def recover(self, request: InferenceRequested, deadline: float) -> None:
        while self.down_for is None or self.waits < self.down_for:
            self.waits += 1
            if asyncio.get_running_loop().time() >= deadline:
                raise InferenceError("inference server unavailable: no endpoint served 'scripted' again within 0s")
            await asyncio.sleep(0)


class Flaky:
    """A model stream whose server goes away during the first `outages` streams, after one piece."""

    def __init__(self, *pieces: str, outages: int = 1) -> None:
        self.pieces = pieces
        self.outages = outages
        self.calls = 0

    async def __call__(self, request: InferenceRequested) -> AsyncGenerator[str, None]:
        self.calls += 1
        if self.calls <= self.outages:
            yield self.pieces[0]
            raise InferenceError("inference server unavailable (UNAVAILABLE): Socket closed", retryable=True)
        for piece in self.pieces:
            yield piece


def generation(
    stream: TextStream,
    log: FakeLog,
    attempt: int | None = 1,
    max_attempts: int = 3,
    attempts: Attempts | None = None,
    fleet: Fleet | None = None,
    retry_budget_s: float = 30.0,
    finals: Finals | None = None,
    batching_log: FakeLog | None = None,
) -> Generation:
    return Generation(
        REQUEST.model_copy(update={"occurred_at": utc_now()}),  # fresh: made just now, as a live one
        stream=stream,
        log=log,
        batching_log=batching_log or log,
        attempts=attempts or Attempts(attempt),
        max_attempts=max_attempts,
        topics=Topics(),
        recover=(fleet or Fleet()).recover,
        retry_budget_s=retry_budget_s,
        finals=finals or Finals(None),
    )


async def test_a_response_is_marked_finished_only_once_its_final_events_are_acknowledged() -> None:
    log, attempts = FakeLog(), Attempts(1)
    await generation(Model("Hi"), log, attempts=attempts).run()

    assert attempts.finished == [REQUEST.response_id]
    assert isinstance(log.last(TOKENS), ResponseEnded)


async def test_a_request_redelivered_after_its_response_ended_writes_nothing() -> None:
    log = FakeLog()
    await generation(Model("Hi"), log, attempt=None).run()

    assert log.sent == []


async def test_a_completed_response_streams_tokens_in_order_then_records_the_text() -> None:
    log = FakeLog()
    await generation(Model("Hello ", "there, ", "friend."), log).run()

    assert log.types(TOKENS) == ["ResponseStarted", *["TokenGenerated"] * 3, "ResponseEnded"]
    tokens = [event for _, event in log.sent if isinstance(event, TokenGenerated)]
    assert [(t.seq, t.text) for t in tokens] == [(0, "Hello "), (1, "there, "), (2, "friend.")]
    completed = log.last(CONVERSATIONS)
    assert isinstance(completed, ResponseCompleted)
    assert (completed.text, completed.finish_reason, completed.message_id) == ("Hello there, friend.", "stop", "m1")
    assert (completed.usage.prompt_tokens, completed.usage.completion_tokens) == (7, 3)
    ended = log.last(TOKENS)
    assert isinstance(ended, ResponseEnded)
    assert (ended.outcome, ended.finish_reason) == ("completed", "stop")


async def test_a_response_cut_at_max_tokens_finishes_for_length() -> None:
    log = FakeLog()
    await generation(Model(*["word "] * REQUEST.max_tokens), log).run()
    completed = log.last(CONVERSATIONS)
    assert isinstance(completed, ResponseCompleted)
    assert completed.finish_reason == "length"


async def test_a_model_error_fails_the_response_with_its_reason() -> None:
    log = FakeLog()
    await generation(Model("Hel", error=InferenceError("the model failed: out of memory")), log).run()

    failed = log.last(CONVERSATIONS)
    assert isinstance(failed, ResponseFailed)
    assert failed.error == "the model failed: out of memory"
    ended = log.last(TOKENS)
    assert isinstance(ended, ResponseEnded)
    assert (ended.outcome, ended.detail) == ("failed", "the model failed: out of memory")


async def test_a_model_error_before_its_first_piece_fails_the_response() -> None:
    log, model = FakeLog(), Model(error=InferenceError("the model failed: no such adapter"))
    await asyncio.wait_for(generation(model, log, attempts=SlowAttempts(model, 1)).run(), timeout=5)

    failed = log.last(CONVERSATIONS)
    assert isinstance(failed, ResponseFailed) and failed.error == "the model failed: no such adapter"
    assert log.types(TOKENS) == ["ResponseStarted", "ResponseEnded"]


async def test_a_user_cancel_stops_the_stream_and_keeps_the_partial_text() -> None:
    log = FakeLog()
    model = Model("Once ", "upon ", hang=True)
    running = generation(model, log)
    task = asyncio.create_task(running.run())
    await model.hanging.wait()

    running.cancel()
    await task

    assert model.closed
    cancelled = log.last(CONVERSATIONS)
    assert isinstance(cancelled, ResponseCancelled)
    assert cancelled.text == "Once upon "
    ended = log.last(TOKENS)
    assert isinstance(ended, ResponseEnded)
    assert ended.outcome == "cancelled"


async def test_a_cancel_before_the_stream_starts_generates_nothing() -> None:
    log = FakeLog()
    running = generation(Model("never"), log)
    running.cancel()
    await running.run()

    assert log.types(TOKENS) == ["ResponseEnded"]
    cancelled = log.last(CONVERSATIONS)
    assert isinstance(cancelled, ResponseCancelled)
    assert cancelled.text == ""


async def test_an_abandoned_generation_writes_no_outcome() -> None:
    """Shutdown or a lost partition: the request stays uncommitted and is retried elsewhere."""
    log, attempts = FakeLog(), Attempts(1)
    model = Model("Once ", hang=True)
    task = asyncio.create_task(generation(model, log, attempts=attempts).run())
    await model.hanging.wait()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert model.closed
    assert attempts.finished == [], "an abandoned response must stay open for its retry"
    assert log.types(CONVERSATIONS) == []
    assert log.types(TOKENS) == ["ResponseStarted", "TokenGenerated"]


async def test_a_retry_tells_clients_to_discard_the_earlier_attempt() -> None:
    log = FakeLog()
    await generation(Model("Hi"), log, attempt=2).run()

    restarted, started = (event for _, event in log.sent[:2])
    assert isinstance(restarted, ResponseRestarted) and restarted.attempt == 2
    assert isinstance(started, ResponseStarted) and started.attempt == 2
    assert all(getattr(event, "attempt", None) == 2 for _, event in log.sent)


async def test_the_model_starts_while_the_attempt_is_numbered() -> None:
    log, model = FakeLog(), Model("Hi", " there")
    await asyncio.wait_for(generation(model, log, attempts=SlowAttempts(model, 1)).run(), timeout=5)

    assert log.types(TOKENS) == ["ResponseStarted", "TokenGenerated", "TokenGenerated", "ResponseEnded"]
    assert [getattr(event, "attempt", None) for _, event in log.sent] == [1] * 5


class CheckedAttempts(Attempts):
    """An attempt record that notes, at each `begin`, whether the model had been asked yet (after
    letting every other ready task run: an early stream's first read would have started)."""

    def __init__(self, model: Model, attempt: int | None) -> None:
        super().__init__(attempt)
        self._model = model
        self.model_asked_before_begin: list[bool] = []

    async def begin(self, response_id: str) -> Begun | None:
        for _ in range(3):
            await asyncio.sleep(0)
        self.model_asked_before_begin.append(self._model.asked.is_set())
        return await super().begin(response_id)


async def test_a_request_made_long_ago_asks_the_model_only_once_numbered() -> None:
    """A take-over redelivers the dead bridge's last replies, most of them answered already: none
    may start a generation on the model before its record says whether it is wanted."""
    log, model = FakeLog(), Model("Hi")
    attempts = CheckedAttempts(model, None)
    redelivered = REQUEST.model_copy(update={"occurred_at": utc_now() - timedelta(seconds=EARLY_START_S + 8)})
    await Generation(
        redelivered,
        stream=model,
        log=log,
        batching_log=log,
        attempts=attempts,
        max_attempts=3,
        topics=Topics(),
        recover=Fleet().recover,
        retry_budget_s=30.0,
        finals=Finals(None),
    ).run()

    assert attempts.model_asked_before_begin == [False]
    assert not model.asked.is_set() and log.sent == []


async def test_a_fresh_request_asks_the_model_before_it_is_numbered() -> None:
    log, model = FakeLog(), Model("Hi")
    attempts = CheckedAttempts(model, 1)
    await generation(model, log, attempts=attempts).run()

    assert attempts.model_asked_before_begin == [True]
    assert log.types(TOKENS) == ["ResponseStarted", "TokenGenerated", "ResponseEnded"]


async def test_a_stream_opened_for_a_request_answered_already_is_cancelled() -> None:
    log, model = FakeLog(), Model("never", hang=True)
    await asyncio.wait_for(generation(model, log, attempts=SlowAttempts(model, None)).run(), timeout=5)

    assert model.closed
    assert log.sent == []


async def test_a_request_past_its_attempts_fails_without_generating() -> None:
    log = FakeLog()
    model = Model("never", hang=True)
    await asyncio.wait_for(generation(model, log, attempts=SlowAttempts(model, 4), max_attempts=3).run(), timeout=5)

    assert model.closed, "the stream opened while the attempt was numbered is cancelled"
    failed = log.last(CONVERSATIONS)
    assert isinstance(failed, ResponseFailed)
    assert "3 attempts" in failed.error
    assert log.types(TOKENS) == ["ResponseEnded"]


async def test_run_returns_only_once_every_event_is_acknowledged() -> None:
    log = FakeLog(hold_acks=True)
    task = asyncio.create_task(generation(Model("a ", "b"), log).run())
    await _until(lambda: log.types(TOKENS) == ["ResponseStarted", "TokenGenerated"])
    log.acknowledge()
    await _until(lambda: log.types(TOKENS) == ["ResponseStarted", "TokenGenerated", "TokenGenerated"])
    log.acknowledge()
    await log.finished.wait()
    assert log.types(TOKENS)[-1] != "ResponseEnded", "the stream's end waits for history's final event"

    log.acknowledge()
    await _until(lambda: log.types(TOKENS)[-1] == "ResponseEnded")
    done, _ = await asyncio.wait({task}, timeout=0.1)
    assert not done
    log.unacked[-1].set_result(None)
    await task


async def test_the_first_token_goes_at_once_and_the_rest_batched_once_it_is_acknowledged() -> None:
    """Two producers keep no order between them: the batching one takes the reply's tokens only
    once the start and the first token are acknowledged."""
    log, batching = FakeLog(hold_acks=True), FakeLog(hold_acks=True)
    task = asyncio.create_task(generation(Model("a ", "b ", "c"), log, batching_log=batching).run())
    await _until(lambda: log.types(TOKENS) == ["ResponseStarted", "TokenGenerated"])
    await asyncio.wait({task}, timeout=0.05)
    assert batching.sent == [], "the second token must not overtake the first"

    log.acknowledge()
    await _until(lambda: len(batching.sent) == 2)
    assert [(e.seq, e.text) for _, e in batching.sent if isinstance(e, TokenGenerated)] == [(1, "b "), (2, "c")]
    assert log.types(TOKENS) == ["ResponseStarted", "TokenGenerated"]


async def test_the_final_event_is_written_only_once_every_token_is_acknowledged() -> None:
    """A final event in the log vouches for every token before it: a bridge killed between the two
    would otherwise leave history's text longer than the token stream (its next attempt, finding
    the final event, writes only the stream's end)."""
    log, batching = FakeLog(), FakeLog(hold_acks=True)
    attempts = Attempts(1)
    task = asyncio.create_task(generation(Model("a ", "b ", "c"), log, attempts=attempts, batching_log=batching).run())
    await _until(lambda: len(batching.sent) == 2)
    await asyncio.wait({task}, timeout=0.05)
    assert log.types(CONVERSATIONS) == [] and attempts.endings == [], "nothing of the ending before the tokens land"

    batching.acknowledge()
    await task
    assert log.types(CONVERSATIONS) == ["ResponseCompleted"] and log.types(TOKENS)[-1] == "ResponseEnded"
    assert attempts.finished == [REQUEST.response_id]


async def test_a_reply_whose_stream_ended_hurries_its_lingering_tokens() -> None:
    """Its final event waits for their acknowledgement, and its client for the `done` after it:
    they should not wait out the batching producer's linger as well."""
    log, batching = FakeLog(), FakeLog(hold_acks=True)
    task = asyncio.create_task(generation(Model("a ", "b ", "c"), log, batching_log=batching).run())
    await _until(lambda: batching.hurried > 0)
    assert len(batching.sent) == 2, "hurried once the model's stream ended, its last token queued"

    batching.acknowledge()
    await task
    assert batching.hurried == 1


async def _until(condition) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110  (yields to the bridge's tasks until the fake log shows the step)
            await asyncio.sleep(0)


async def test_a_server_that_went_away_mid_reply_is_retried_as_the_next_attempt() -> None:
    log, fleet = FakeLog(), Fleet(down_for=3)
    await generation(Flaky("Hello ", "there"), log, fleet=fleet).run()

    assert fleet.waits == 3, "the retry waits until an endpoint serves the model again"
    assert log.types(TOKENS) == [
        *["ResponseStarted", "TokenGenerated"],
        *["ResponseRestarted", "ResponseStarted", "TokenGenerated", "TokenGenerated", "ResponseEnded"],
    ]
    tokens = [e for _, e in log.sent if isinstance(e, TokenGenerated)]
    assert [(t.attempt, t.seq) for t in tokens] == [(1, 0), (2, 0), (2, 1)]
    completed = log.last(CONVERSATIONS)
    assert isinstance(completed, ResponseCompleted)
    assert (completed.text, completed.attempt) == ("Hello there", 2)
    assert log.types(CONVERSATIONS) == ["ResponseCompleted"]


async def test_a_server_that_stays_away_past_the_budget_fails_the_reply() -> None:
    log = FakeLog()
    await generation(Flaky("Hello "), log, fleet=Fleet(down_for=None), retry_budget_s=0.0).run()

    failed = log.last(CONVERSATIONS)
    assert isinstance(failed, ResponseFailed) and "no endpoint served" in failed.error
    assert log.types(TOKENS) == ["ResponseStarted", "TokenGenerated", "ResponseEnded"]


async def test_a_model_error_is_not_retried() -> None:
    log = FakeLog()
    model = Model("Hel", error=InferenceError("the model failed: out of memory"))
    await generation(model, log, fleet=Fleet(down_for=None)).run()

    assert isinstance(log.last(CONVERSATIONS), ResponseFailed)
    assert "ResponseRestarted" not in log.types(TOKENS)


async def test_a_generation_taken_over_by_a_newer_attempt_stops_writing() -> None:
    """Another bridge began attempt 2 while this one was frozen: attempt 1 must not end the reply."""
    log, attempts = FakeLog(), Attempts(1)
    model = Model("Once ", hang=True)
    running = generation(model, log, attempts=attempts)
    task = asyncio.create_task(running.run())
    await model.hanging.wait()

    attempts.newest = 2
    running.cancel()  # would end the reply as cancelled, were this still the newest attempt
    await task

    assert log.types(CONVERSATIONS) == []
    assert log.types(TOKENS) == ["ResponseStarted", "TokenGenerated"]
    assert attempts.finished == [], "the newer attempt ends the response"


async def test_a_generation_taken_over_mid_stream_stops_streaming() -> None:
    log, attempts = FakeLog(), Attempts(1)

    async def stream(request: InferenceRequested) -> AsyncGenerator[str, None]:
        yield "one "
        attempts.newest = 2  # taken over
        await asyncio.sleep(FENCE_CHECK_S)  # past the next fence check
        yield "two "
        yield "three"

    await generation(stream, log, attempts=attempts).run()

    assert [e.text for _, e in log.sent if isinstance(e, TokenGenerated)] == ["one "]
    assert log.types(CONVERSATIONS) == []


async def test_a_generation_is_ending_from_the_moment_its_final_event_is_sent() -> None:
    """The bridge abandons a generation on a rebalance, but not one whose final event is queued:
    that event lands anyway, so the generation must see it through (stream end, finished mark)."""
    log = FakeLog(hold_acks=True)
    reply = generation(Model("a ", "b"), log)
    task = asyncio.create_task(reply.run())
    await _until(lambda: len(log.types(TOKENS)) >= 2)
    log.acknowledge()
    await _until(lambda: len(log.types(TOKENS)) >= 3)
    assert not reply.ending
    log.acknowledge()

    await log.finished.wait()
    assert reply.ending
    log.acknowledge()
    await _until(lambda: log.types(TOKENS)[-1] == "ResponseEnded")
    log.unacked[-1].set_result(None)
    await task


class CountedAttempts(Attempts):
    """Attempts that count how often the fence asked for the newest attempt."""

    def __init__(self, attempt: int | None) -> None:
        super().__init__(attempt)
        self.asked = 0

    async def current(self, response_id: str) -> int | None:
        self.asked += 1
        return await super().current(response_id)


async def test_the_first_token_does_not_wait_for_a_fence_check_right_after_the_attempt_was_numbered() -> None:
    log, attempts = FakeLog(), CountedAttempts(1)

    await generation(Model("Hello ", "there"), log, attempts=attempts).run()

    assert log.types(CONVERSATIONS) == ["ResponseCompleted"]
    assert (attempts.asked, attempts.endings) == (0, [1]), "only the check before the final event, with its mark"


async def test_triton_restarts_do_not_use_up_the_deliveries_max_attempts_bounds() -> None:
    """Delivery 1 went through attempts 1-3 (Triton went away twice), then its bridge died: the
    redelivery is attempt 4 but only delivery 2 of at most 3, so it is answered, not failed."""
    log = FakeLog()
    attempts = Attempts(4, delivery=2)
    await generation(Model("Hello ", "there"), log, attempts=attempts, max_attempts=3).run()

    completed = log.last(CONVERSATIONS)
    assert isinstance(completed, ResponseCompleted)
    assert (completed.text, completed.attempt) == ("Hello there", 4)


LANDED = ResponseCompleted(
    conversation_id="c1",
    user_id="u1",
    message_id="m1",
    response_id="r1",
    text="Hello",
    finish_reason="stop",
    usage=Usage(prompt_tokens=7, completion_tokens=1),
    attempt=1,
)


async def test_an_attempt_after_one_that_died_between_its_final_events_writes_only_the_missing_end() -> None:
    log, attempts, finals = FakeLog(), Attempts(2, ending_since_ms=1_000), Finals(Landed(LANDED, ended=False))

    await generation(Model("never", "read"), log, attempts=attempts, finals=finals).run()

    assert finals.asked == [1_000]
    assert log.types(CONVERSATIONS) == [] and log.types(TOKENS) == ["ResponseEnded"]
    ended = log.last(TOKENS)
    assert isinstance(ended, ResponseEnded)
    assert (ended.outcome, ended.finish_reason, ended.usage, ended.attempt) == ("completed", "stop", LANDED.usage, 1)
    assert attempts.finished == ["r1"]


async def test_a_redelivery_finds_final_events_written_while_redis_could_not_take_the_mark() -> None:
    """The earlier attempt's fence check was skipped (Redis down or loading) and its `finish`
    failed, leaving the request to be redelivered without an `ending` mark: the log is read since
    the request was made, and only the missing end is written."""
    log, finals = FakeLog(), Finals(Landed(LANDED, ended=False))
    attempts = Attempts(2, delivery=2)

    reply = generation(Model("never", "read"), log, attempts=attempts, finals=finals)
    await reply.run()

    assert finals.asked == [int(reply.request.occurred_at.timestamp() * 1000)], "read since the request was made"
    assert log.types(CONVERSATIONS) == [] and log.types(TOKENS) == ["ResponseEnded"]
    assert attempts.finished == ["r1"]


async def test_a_first_delivery_without_a_mark_does_not_read_the_log() -> None:
    log, finals = FakeLog(), Finals(Landed(LANDED, ended=True))

    await generation(Model("Hi"), log, attempts=Attempts(1), finals=finals).run()

    assert finals.asked == [] and log.types(CONVERSATIONS) == ["ResponseCompleted"]


async def test_an_attempt_after_one_whose_final_events_all_landed_writes_nothing() -> None:
    log, attempts = FakeLog(), Attempts(2, ending_since_ms=1_000)

    await generation(Model("never"), log, attempts=attempts, finals=Finals(Landed(LANDED, ended=True))).run()

    assert log.sent == [] and attempts.finished == ["r1"]


async def test_an_attempt_after_one_that_died_before_its_final_event_landed_answers() -> None:
    log, attempts = FakeLog(), Attempts(2, ending_since_ms=1_000)

    await generation(Model("Hi"), log, attempts=attempts, finals=Finals(None)).run()

    assert log.types(CONVERSATIONS) == ["ResponseCompleted"] and log.types(TOKENS)[-1] == "ResponseEnded"
    assert attempts.endings == [2]


async def test_an_attempt_marks_its_final_events_as_being_written_before_writing_them() -> None:
    log, attempts = FakeLog(), Attempts(1)

    await generation(Model("Hi"), log, attempts=attempts).run()

    assert attempts.endings == [1] and log.types(CONVERSATIONS) == ["ResponseCompleted"]
