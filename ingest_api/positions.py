"""Token-stream events with their log positions, which double as SSE ids (rule 5)."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import ResponseEnded, ResponseRestarted, ResponseStarted, TokenGenerated

TokenStreamEvent = ResponseStarted | TokenGenerated | ResponseRestarted | ResponseEnded


@dataclass(frozen=True)
class LoggedEvent:
    offset: int  # the event's offset in its partition of the token stream
    event: TokenStreamEvent
