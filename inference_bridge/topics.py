"""The topics the bridge reads and writes: steno's own, or scratch copies for tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, fields

from schemas.topics import CONTROL, CONVERSATIONS, DEAD_LETTERS, INFERENCE_REQUESTS, TOKENS, Topic


@dataclass(frozen=True)
class Topics:
    inference_requests: Topic = INFERENCE_REQUESTS
    control: Topic = CONTROL
    tokens: Topic = TOKENS
    conversations: Topic = CONVERSATIONS
    dead_letters: Topic = DEAD_LETTERS

    def all(self) -> list[Topic]:
        return [getattr(self, field.name) for field in fields(self)]
