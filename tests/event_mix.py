"""Conversations as the pipeline writes them to the log, at chosen times, for the analytics tests.

Each turn yields the conversation-log events and the token-stream events a real one produces, in
the order each topic holds them, with timestamps that make its figures known in advance:
TTFT = `ttft_ms`, decode rate = 1000 / `itl_ms` tokens per second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from schemas.events import (
    ConversationStarted,
    Event,
    GenerationCancelRequested,
    MessageAccepted,
    MessageBlocked,
    MessageSubmitted,
    ResponseCancelled,
    ResponseCompleted,
    ResponseEnded,
    ResponseFailed,
    ResponseStarted,
    TokenGenerated,
    Usage,
    new_id,
)


@dataclass
class Conversation:
    started: datetime
    user_id: str = field(default_factory=lambda: f"user-{new_id()}")
    conversation_id: str = field(default_factory=new_id)
    log: list[Event] = field(default_factory=list)  # the conversation log's events
    tokens: list[Event] = field(default_factory=list)  # the token stream's events
    control: list[Event] = field(default_factory=list)  # the control topic's events

    def __post_init__(self) -> None:
        self.log.append(ConversationStarted(**self._ids(self.started)))

    def answered(
        self, after_s: float, model: str, ttft_ms: int, tokens: int, itl_ms: int, cancelled: bool = False
    ) -> MessageSubmitted:
        """A message accepted and answered with `tokens` tokens (or cancelled after them)."""
        submitted, at = self._submit(after_s, model)
        self.log.append(self._accepted(submitted, at(10)))
        self.tokens.append(ResponseStarted(**self._reply(submitted, at(15))))
        last_ms = ttft_ms + (tokens - 1) * itl_ms
        self.tokens += [
            TokenGenerated(**self._reply(submitted, at(ttft_ms + seq * itl_ms)), seq=seq, text=f"w{seq} ")
            for seq in range(tokens)
        ]
        text, ended = "".join(f"w{seq} " for seq in range(tokens)), at(last_ms + 1)
        if cancelled:
            self.control.append(GenerationCancelRequested(**self._reply(submitted, at(last_ms))))
            self.log.append(ResponseCancelled(**self._pair(submitted, ended), text=text))
        else:
            usage = Usage(prompt_tokens=5, completion_tokens=tokens)
            self.log.append(
                ResponseCompleted(**self._pair(submitted, ended), text=text, finish_reason="stop", usage=usage)
            )
        outcome: Literal["cancelled", "completed"] = "cancelled" if cancelled else "completed"
        self.tokens.append(ResponseEnded(**self._reply(submitted, ended), outcome=outcome))
        return submitted

    def blocked(self, after_s: float, categories: list[str]) -> MessageSubmitted:
        submitted, at = self._submit(after_s, "scripted")
        self.log.append(MessageBlocked(**self._pair(submitted, at(10)), categories=categories, reason="not allowed"))
        self.tokens.append(ResponseEnded(**self._reply(submitted, at(12)), outcome="blocked"))
        return submitted

    def failed(self, after_s: float, model: str) -> MessageSubmitted:
        submitted, at = self._submit(after_s, model)
        self.log.append(self._accepted(submitted, at(10)))
        self.log.append(ResponseFailed(**self._pair(submitted, at(500)), error="triton unavailable"))
        self.tokens.append(ResponseEnded(**self._reply(submitted, at(500)), outcome="failed"))
        return submitted

    def _submit(self, after_s: float, model: str) -> tuple[MessageSubmitted, Any]:
        sent = self.started + timedelta(seconds=after_s)
        ids: dict[str, Any] = {"message_id": new_id(), "response_id": new_id()}
        submitted = MessageSubmitted(**self._ids(sent), **ids, content="hello", model=model)
        self.log.append(submitted)
        return submitted, lambda ms: sent + timedelta(milliseconds=ms)

    def _accepted(self, submitted: MessageSubmitted, at: datetime) -> MessageAccepted:
        return MessageAccepted(
            **self._pair(submitted, at), model=submitted.model, content=submitted.content, submitted_offset=0
        )

    def _ids(self, at: datetime) -> dict[str, Any]:
        return {"conversation_id": self.conversation_id, "user_id": self.user_id, "occurred_at": at}

    def _pair(self, submitted: MessageSubmitted, at: datetime) -> dict[str, Any]:
        return {**self._ids(at), "message_id": submitted.message_id, "response_id": submitted.response_id}

    def _reply(self, submitted: MessageSubmitted, at: datetime) -> dict[str, Any]:
        return {**self._ids(at), "response_id": submitted.response_id}


def realistic_mix(start: datetime) -> list[Conversation]:
    """Seven messages of three users: answered by two models, blocked, cancelled, failed.

    TTFT scripted 0.1, 0.2, 0.3 s; smollm2 0.4 s. Tokens/s scripted 100, 50, 100; smollm2 20.
    """
    alice, bob, carol = Conversation(start), Conversation(start), Conversation(start)
    alice.answered(1, "scripted", ttft_ms=100, tokens=11, itl_ms=10)
    alice.answered(5, "scripted", ttft_ms=200, tokens=11, itl_ms=20)
    bob.answered(2, "smollm2", ttft_ms=400, tokens=5, itl_ms=50)
    bob.blocked(6, ["weapons"])
    bob.blocked(7, ["weapons", "malware"])
    carol.answered(3, "scripted", ttft_ms=300, tokens=3, itl_ms=10, cancelled=True)
    carol.failed(4, "smollm2")
    return [alice, bob, carol]
