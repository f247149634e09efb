"""One inference request's life in the bridge: from InferenceRequested to the events it owes the log.

Every request ends in exactly one terminal event on the conversation log (ResponseCompleted,
ResponseFailed or ResponseCancelled) and a ResponseEnded on the token stream that live clients
wait for. Token events are sent without waiting for each acknowledgement — the producers batch
them while the previous batch is in flight — and `run` returns only once Kafka acknowledged all
of them and the terminal events, so the caller may then commit the request (rule 6).

A reply's events go through two producers: its start and first token through one that sends at
once (`log`), the rest of its tokens through one that holds them for a window to batch them
(`batching_log`).
Kafka keeps no order between two producers, so a generation switches from one to the other only
once every event it sent through the first is acknowledged, and writes its final events only once
every token is: a final event in the log vouches for every token of its reply before it.

Two ways to stop a generation early, kept apart on purpose:
- `cancel()` is the user's cancel: streaming stops and the partial text is recorded.
- cancelling the task that runs `run` abandons the generation (shutdown, partition revoked):
  nothing more is written, and the request, not committed, is retried by its next owner.

A server that goes away or hangs mid-reply (InferenceError.retryable) does not fail the user: the
generation waits until an endpoint serves the model again (`recover`, bounded by the retry budget
from the first interruption), then starts over as a new attempt, announced by ResponseRestarted.

Attempts are numbered by the shared record, one number per attempt wherever it runs, and a
generation that finds its number is no longer the newest (another bridge took its request over
while this one was frozen or cut off) stops without writing anything more.

An attempt whose predecessor died while writing its final events (the record says one began)
first looks for them in the log: if the reply's final event landed, it writes only what is
missing (the ResponseEnded) instead of answering a second time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from functools import partial
from typing import Any, Protocol

from inference_bridge.attempts import Begun
from inference_bridge.early_stream import EarlyStream
from inference_bridge.final_events import Final, Landed
from inference_bridge.topics import Topics
from inference_bridge.triton_stream import InferenceError
from schemas.events import (
    Event,
    InferenceRequested,
    ResponseCancelled,
    ResponseCompleted,
    ResponseEnded,
    ResponseFailed,
    ResponseRestarted,
    ResponseStarted,
    Usage,
    utc_now,
)
from schemas.serde import TokenEncoder
from schemas.topics import Topic

TextStream = Callable[[InferenceRequested], AsyncGenerator[str, None]]
"""The model's output for a request, piece by piece; raises InferenceError when it cannot finish."""
Recover = Callable[[InferenceRequested, float], Awaitable[None]]
"""Wait until some endpoint serves the request's model again; raise InferenceError once the event
loop's clock passes the deadline (the second argument) first."""

FENCE_CHECK_S = 1.0  # while streaming, how often a generation checks it is still the newest attempt
# A request made longer ago than this (by the processors' clock) is a redelivery's or a backlog's:
# its model stream waits for its attempt's number. A take-over comes after the dead bridge's
# session timeout (6 s), so its redeliveries are all older; clocks a fleet keeps by NTP agree far
# better than this.
EARLY_START_S = 2.0

log = logging.getLogger(__name__)


class TokenLog(Protocol):
    """Where a reply's tokens after its first go (`infra.windowed_producer.WindowedProducer`).
    Each send returns an awaitable that resolves when Kafka acknowledged the event; a generation
    awaits them all once, at its end."""

    def sender(self, topic: Topic, conversation_id: str) -> Callable[[bytes], Awaitable[Any]]:
        """Queue events already encoded (the tokens, by `TokenEncoder`) on the conversation's partition."""

    def hurry(self) -> None:
        """A reply is waiting for its tokens' acknowledgements: send what lingers soon."""


class EventLog(TokenLog, Protocol):
    """Where a generation's other events go (`infra.kafka_clients.EventProducer`), the same way."""

    def produce(self, topic: Topic, event: Event) -> Awaitable[Any]:
        """Queue an event on its conversation's partition of `topic`."""


class AttemptRecord(Protocol):
    """The shared record of a response's attempts (inference_bridge.attempts)."""

    async def begin(self, response_id: str) -> Begun | None: ...

    async def retry(self, response_id: str) -> int | None: ...

    async def current(self, response_id: str) -> int | None: ...

    async def ending(self, response_id: str, attempt: int) -> bool | None: ...

    async def finish(self, response_id: str) -> None: ...


class LandedFinals(Protocol):
    """What an attempt that died while ending left in the log (`inference_bridge.final_events`)."""

    async def landed(self, request: InferenceRequested, since_ms: int) -> Landed | None: ...


class Superseded(Exception):
    """A newer attempt at the response began elsewhere: this one must write nothing more."""


class Generation:
    """One request, generated once: `run` it as a task; `cancel` it when the user asks."""

    def __init__(
        self,
        request: InferenceRequested,
        *,
        stream: TextStream,
        log: EventLog,
        batching_log: TokenLog,
        attempts: AttemptRecord,
        max_attempts: int,
        topics: Topics,
        recover: Recover,
        retry_budget_s: float,
        finals: LandedFinals,
    ) -> None:
        self.request = request
        self._finals = finals
        self._stream = stream
        self._recover = recover
        self._retry_budget_s = retry_budget_s
        self._log = log
        self._send_token = log.sender(topics.tokens, request.conversation_id)
        self._send_later_token = batching_log.sender(topics.tokens, request.conversation_id)
        self._hurry = batching_log.hurry
        self._tokens = topics.tokens
        self._conversations = topics.conversations
        self._attempts = attempts
        self._max_attempts = max_attempts
        self._attempt = 0  # numbered by run(), from the shared counter
        self._pieces: list[str] = []
        self._acks: list[Awaitable[Any]] = []
        self._cancel_requested = False
        self._streaming: asyncio.Task[None] | None = None
        self._early: EarlyStream | None = None  # the first attempt's stream, opened by run()
        self._fence_checked_at = 0.0
        self.ending = False  # its final event is being written: it must finish, not be abandoned

    def cancel(self) -> None:
        """The user stopped the reply: end it now, keeping what was generated so far."""
        self._cancel_requested = True
        if self._streaming is not None:
            self._streaming.cancel()

    async def run(self) -> None:
        """Generate and record the response; returns once all its events are acknowledged.

        A fresh request's stream is opened before the attempt is numbered, which takes a Redis
        round trip off the first token's path (`early_stream`); it is read only once the attempt
        is. An older one is most likely redelivered after a bridge died, answered already as
        often as not: it asks the model only once numbered, so a take-over does not start (and
        cancel) a generation on the GPUs for every reply of the dead bridge's last second."""
        self._early = early = EarlyStream(self._stream(self.request)) if self._fresh() else None
        try:
            await self._numbered_and_answered()
        finally:
            if early is not None:
                await early.aclose()  # not read (answered already, given up), or read and ended

    def _fresh(self) -> bool:
        return (utc_now() - self.request.occurred_at).total_seconds() < EARLY_START_S

    async def _numbered_and_answered(self) -> None:
        begun = await self._attempts.begin(self.request.response_id)
        if begun is None:
            return  # redelivered after its final events were acknowledged: answered already
        if begun.deliveries > 1:
            response_id = self.request.response_id
            log.info(
                "response %s taken up again: delivery %d, attempt %d", response_id, begun.deliveries, begun.attempt
            )
        self._numbered(begun.attempt)
        try:
            await self._answer(begun)
        except Superseded:
            await _acknowledged(self._acks)
            return  # the newer attempt ends the response
        await _acknowledged(self._acks)
        await self._attempts.finish(self.request.response_id)

    async def _answer(self, begun: Begun) -> None:
        """This attempt's events: what an earlier one left missing, or a failure, or a reply."""
        since_ms = self._earlier_ending_since(begun)
        if since_ms is not None and await self._ended_before(since_ms):
            return  # the attempt before this one answered; what it left missing is written
        if begun.deliveries > self._max_attempts:
            await self._fail(f"gave up after {self._max_attempts} attempts: generation kept being interrupted")
        elif self._cancel_requested:
            await self._cancelled()
        else:
            self._announce()
            await self._generate()

    def _earlier_ending_since(self, begun: Begun) -> int | None:
        """Since when (ms) an earlier attempt may have written the response's final events, or
        None when none can have. The `ending` mark says so and when; without it, a redelivery may
        still follow an attempt that wrote them while Redis could not take the mark (its check is
        skipped then, and its `finish` failed, leaving the request to be redelivered): its final
        event is looked for in the log since the request was made. A conversation partition read,
        and only after a bridge died or stopped on an error."""
        if begun.ending_since_ms is not None:
            return begun.ending_since_ms
        if begun.deliveries > 1:
            return int(self.request.occurred_at.timestamp() * 1000)
        return None

    def unacknowledged(self) -> list[Awaitable[Any]]:
        """The events sent and not yet acknowledged (to wait for when abandoning the generation)."""
        return list(self._acks)

    def _announce(self) -> None:
        """The token stream's start of this attempt; a retry first tells clients to discard the last."""
        if self._attempt > 1:
            self._emit(self._tokens, ResponseRestarted(**self._ids()))
        self._emit(self._tokens, ResponseStarted(**self._ids()))

    async def _generate(self) -> None:
        self._streaming = asyncio.create_task(self._stream_with_retries())
        try:
            await self._streaming
        except InferenceError as exc:
            await self._fenced(partial(self._fail, str(exc)))
        except asyncio.CancelledError:
            if not self._cancel_requested or _current_task_cancelling():
                raise  # abandoned, not cancelled by the user
            await self._fenced(self._cancelled)
        else:
            await self._fenced(self._completed)

    async def _fenced(self, ending: Callable[[], Awaitable[None]]) -> None:
        """Write the ending only while this is the newest attempt, marked as being written.

        Every token is acknowledged first: the batching producer's last ones may still be
        lingering, and a bridge killed after the final event landed but before they did would
        leave history's text longer than the token stream it vouches for (the next attempt,
        finding the final event in the log, writes only what is missing after it). Before the
        fence check, so that the check stays right before the write. The last tokens are hurried
        out of their linger: the ending waits for them, and so does the client for its `done`."""
        self._hurry()
        await _acknowledged(self._acks)
        if await self._attempts.ending(self.request.response_id, self._attempt) is False:
            raise Superseded
        await ending()

    async def _ended_before(self, since_ms: int) -> bool:
        """Whether an earlier attempt's final event is in the log; if it is, its ResponseEnded is
        written unless it is there too (the earlier bridge died between the two)."""
        landed = await self._finals.landed(self.request, since_ms)
        if landed is None:
            return False
        self.ending = True
        if not landed.ended:
            self._acks.append(self._log.produce(self._tokens, _ended_by(landed.final)))
        return True

    async def _stream_with_retries(self) -> None:
        """Stream the reply, starting over as a new attempt after the server went away."""
        deadline: float | None = None
        while True:
            try:
                return await self._stream_tokens()
            except InferenceError as exc:
                if not exc.retryable:
                    raise
                if deadline is None:
                    deadline = asyncio.get_running_loop().time() + self._retry_budget_s
                await self._recover(self.request, deadline)
                await self._restart()

    async def _restart(self) -> None:
        await _acknowledged(self._acks)  # the interrupted attempt's tokens, before the restart's events
        attempt = await self._attempts.retry(self.request.response_id)
        if attempt is None:
            raise Superseded  # ended by another attempt meanwhile
        self._numbered(attempt)
        self._pieces = []
        self._announce()

    def _numbered(self, attempt: int) -> None:
        """This generation is now `attempt`, just numbered by the shared record and so the newest:
        as good as a fence check, and the first token need not wait for another Redis round trip."""
        self._attempt = attempt
        self._fence_checked_at = asyncio.get_running_loop().time()

    async def _stream_tokens(self) -> None:
        """Each piece as a TokenGenerated event. The hottest loop of the bridge, so the events are
        encoded by `TokenEncoder` and the fence's clock is checked here, awaiting a coroutine
        only when a check is due. The first goes at once, the rest through the batching producer
        once every event before them is acknowledged (see the module's docstring)."""
        tokens = TokenEncoder(**self._ids())
        pieces, acks, send = self._pieces, self._acks, self._send_token
        clock = asyncio.get_running_loop().time
        async with aclosing(self._opened_stream()) as stream:
            async for piece in stream:
                if clock() - self._fence_checked_at >= FENCE_CHECK_S:
                    await self._check_fence()
                if len(pieces) == 1:
                    await _acknowledged(acks)
                    send = self._send_later_token
                acks.append(send(tokens.encode(len(pieces), piece)))
                pieces.append(piece)

    def _opened_stream(self) -> EarlyStream | AsyncGenerator[str, None]:
        """The stream run() opened, for the first attempt; a new one for each restart."""
        early, self._early = self._early, None
        return early if early is not None else self._stream(self.request)

    async def _check_fence(self) -> None:
        """Raise Superseded if a newer attempt began."""
        self._fence_checked_at = asyncio.get_running_loop().time()
        newest = await self._attempts.current(self.request.response_id)
        if newest is not None and newest > self._attempt:
            raise Superseded

    async def _completed(self) -> None:
        reason = "length" if len(self._pieces) >= self.request.max_tokens else "stop"
        usage = Usage(prompt_tokens=self.request.prompt_tokens, completion_tokens=len(self._pieces))
        completed = ResponseCompleted(**self._reply_ids(), text=self._text, finish_reason=reason, usage=usage)
        ended = ResponseEnded(**self._ids(), outcome="completed", finish_reason=reason, usage=usage)
        await self._end(completed, ended)

    async def _fail(self, reason: str) -> None:
        failed = ResponseFailed(**self._reply_ids(), error=reason)
        await self._end(failed, ResponseEnded(**self._ids(), outcome="failed", detail=reason))

    async def _cancelled(self) -> None:
        cancelled = ResponseCancelled(**self._reply_ids(), text=self._text)
        await self._end(cancelled, ResponseEnded(**self._ids(), outcome="cancelled"))

    async def _end(self, final: Event, ending: ResponseEnded) -> None:
        """History's final event first, then the live stream's end.

        A client that saw the end may send its next message at once; its MessageSubmitted then
        comes after this reply in the conversation log, so the next prompt includes the reply.

        From here on the generation is not abandoned (`ending`): its final event is queued in the
        producer and lands whatever happens to this task, so the task must see it acknowledged,
        write the stream's end and mark the response finished; an abandoned one would leave the
        event to land after the retry's, a second ending in the log.
        """
        self.ending = True
        await self._log.produce(self._conversations, final)
        self._emit(self._tokens, ending)

    @property
    def _text(self) -> str:
        return "".join(self._pieces)

    def _emit(self, topic: Topic, event: Event) -> None:
        self._acks.append(self._log.produce(topic, event))

    def _ids(self) -> dict[str, Any]:
        """The fields every token-stream event of this attempt shares."""
        request = self.request
        return {
            "conversation_id": request.conversation_id,
            "user_id": request.user_id,
            "response_id": request.response_id,
            "attempt": self._attempt,
        }

    def _reply_ids(self) -> dict[str, Any]:
        return {**self._ids(), "message_id": self.request.message_id}


def _ended_by(final: Final) -> ResponseEnded:
    """The token stream's end for a final event already in the conversation log."""
    ids = final.model_dump(include={"conversation_id", "user_id", "response_id", "attempt"})
    match final:
        case ResponseCompleted():
            return ResponseEnded(**ids, outcome="completed", finish_reason=final.finish_reason, usage=final.usage)
        case ResponseFailed():
            return ResponseEnded(**ids, outcome="failed", detail=final.error)
    return ResponseEnded(**ids, outcome="cancelled")


async def _acknowledged(acks: list[Awaitable[Any]]) -> None:
    """Wait for every acknowledgement, in turn: `gather` would wrap each one that is not a
    future (the producer's `Delivery`) in a task, a reply's worth of tasks to learn what is
    nearly always known already."""
    for ack in acks:
        await ack


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
