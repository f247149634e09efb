"""One inference request's life in the bridge: from InferenceRequested to the events it owes the log.

Every request ends in exactly one terminal event on the conversation log (ResponseCompleted,
ResponseFailed or ResponseCancelled) and a ResponseEnded on the token stream that live clients
wait for. Token events are sent without waiting for each acknowledgement — librdkafka batches
them while the previous batch is in flight — and `run` returns only once Kafka acknowledged all
of them and the terminal events, so the caller may then commit the request (rule 6).

Two ways to stop a generation early, kept apart on purpose:
- `cancel()` is the user's cancel: streaming stops and the partial text is recorded.
- cancelling the task that runs `run` abandons the generation (shutdown, partition revoked):
  nothing more is written, and the request, not committed, is retried by its next owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, Protocol

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
    TokenGenerated,
    Usage,
)
from schemas.topics import Topic

TextStream = Callable[[InferenceRequested], AsyncGenerator[str, None]]
"""The model's output for a request, piece by piece; raises InferenceError when it cannot finish."""
Send = Callable[[Topic, Event], Awaitable[Any]]
"""Queue an event on a topic; the awaitable resolves when Kafka acknowledged it."""


class AttemptRecord(Protocol):
    """The shared record of a response's attempts (inference_bridge.attempts)."""

    async def begin(self, response_id: str) -> int | None: ...

    async def finish(self, response_id: str) -> None: ...


class Generation:
    """One request, generated once: `run` it as a task; `cancel` it when the user asks."""

    def __init__(
        self,
        request: InferenceRequested,
        *,
        stream: TextStream,
        send: Send,
        attempts: AttemptRecord,
        max_attempts: int,
        topics: Topics,
    ) -> None:
        self.request = request
        self._stream = stream
        self._send = send
        self._tokens = topics.tokens
        self._conversations = topics.conversations
        self._attempts = attempts
        self._max_attempts = max_attempts
        self._attempt = 0  # numbered by run(), from the shared counter
        self._pieces: list[str] = []
        self._acks: list[Awaitable[Any]] = []
        self._cancel_requested = False
        self._streaming: asyncio.Task[None] | None = None

    def cancel(self) -> None:
        """The user stopped the reply: end it now, keeping what was generated so far."""
        self._cancel_requested = True
        if self._streaming is not None:
            self._streaming.cancel()

    async def run(self) -> None:
        """Generate and record the response; returns once all its events are acknowledged."""
        attempt = await self._attempts.begin(self.request.response_id)
        if attempt is None:
            return  # redelivered after its final events were acknowledged: answered already
        self._attempt = attempt
        if self._attempt > self._max_attempts:
            await self._fail(f"gave up after {self._max_attempts} attempts: generation kept being interrupted")
        elif self._cancel_requested:
            await self._cancelled()
        else:
            if self._attempt > 1:
                self._emit(self._tokens, ResponseRestarted(**self._ids()))
            self._emit(self._tokens, ResponseStarted(**self._ids()))
            await self._generate()
        await asyncio.gather(*self._acks)
        await self._attempts.finish(self.request.response_id)

    async def _generate(self) -> None:
        self._streaming = asyncio.create_task(self._stream_tokens())
        try:
            await self._streaming
        except InferenceError as exc:
            await self._fail(str(exc))
        except asyncio.CancelledError:
            if not self._cancel_requested or _current_task_cancelling():
                raise  # abandoned, not cancelled by the user
            await self._cancelled()
        else:
            await self._completed()

    async def _stream_tokens(self) -> None:
        async with aclosing(self._stream(self.request)) as pieces:
            async for piece in pieces:
                self._emit(self._tokens, TokenGenerated(**self._ids(), seq=len(self._pieces), text=piece))
                self._pieces.append(piece)

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
        """
        await self._send(self._conversations, final)
        self._emit(self._tokens, ending)

    @property
    def _text(self) -> str:
        return "".join(self._pieces)

    def _emit(self, topic: Topic, event: Event) -> None:
        self._acks.append(self._send(topic, event))

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


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
