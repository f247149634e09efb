"""Time to first token and tokens per second, per response, from the events' own timestamps.

A response's model and start are on the conversation log (MessageSubmitted); its tokens and its
end are on the token stream. The two topics arrive in no particular order relative to each
other (a replay may read one far ahead of the other), so each response is held open until both
sides are known, and the figures come out as soon as they can be computed.

- TTFT: the first token of any attempt minus the submission: what the user waited.
- tokens/s: the last attempt's decode rate, (tokens - 1) / (last token - first token), once the
  response has ended; a restarted generation's earlier attempts say nothing about its speed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from schemas.events import MessageSubmitted, ResponseEnded, TokenGenerated


def millis(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass(frozen=True)
class Observation:
    figure: Literal["ttft_s", "tokens_per_s"]
    model: str
    value: float
    at_ms: int  # when it was observed, in event time: the window it belongs to


@dataclass
class _Open:
    """What is known so far of one response."""

    model: str | None = None
    submitted_ms: int | None = None
    first_token_ms: int | None = None
    ttft_reported: bool = False
    attempt: int = 0
    attempt_tokens: int = 0
    attempt_first_ms: int = 0
    attempt_last_ms: int = 0
    ended_ms: int | None = None


class ResponseTimings:
    """Joins submissions with token events; at most `max_open` responses are held (oldest go first)."""

    def __init__(self, max_open: int) -> None:
        self._max_open = max_open
        self._open: OrderedDict[str, _Open] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def submitted(self, event: MessageSubmitted) -> list[Observation]:
        response = self._get(event.response_id)
        response.model, response.submitted_ms = event.model, millis(event.occurred_at)
        return self._observe(event.response_id, response)

    def token(self, event: TokenGenerated) -> list[Observation]:
        response = self._get(event.response_id)
        at = millis(event.occurred_at)
        response.first_token_ms = min(at, response.first_token_ms or at)
        if event.attempt > response.attempt:  # a restart: only the newest attempt's pace counts
            response.attempt, response.attempt_tokens = event.attempt, 0
            response.attempt_first_ms = response.attempt_last_ms = at
        if event.attempt == response.attempt:
            response.attempt_tokens += 1
            response.attempt_first_ms = min(at, response.attempt_first_ms)
            response.attempt_last_ms = max(at, response.attempt_last_ms)
        return self._observe(event.response_id, response)

    def ended(self, event: ResponseEnded) -> list[Observation]:
        response = self._get(event.response_id)
        response.ended_ms = millis(event.occurred_at)
        return self._observe(event.response_id, response)

    def _get(self, response_id: str) -> _Open:
        response = self._open.get(response_id)
        if response is None:
            response = self._open[response_id] = _Open()
            if len(self._open) > self._max_open:
                self._open.popitem(last=False)  # never joined: its other side is not in the log we read
        return response

    def _observe(self, response_id: str, response: _Open) -> list[Observation]:
        """The figures that just became computable; a finished response is forgotten."""
        if response.model is None or response.submitted_ms is None:
            return []
        observed: list[Observation] = []
        if response.first_token_ms is not None and not response.ttft_reported:
            response.ttft_reported = True
            ttft_s = (response.first_token_ms - response.submitted_ms) / 1000
            observed.append(Observation("ttft_s", response.model, ttft_s, response.first_token_ms))
        if response.ended_ms is not None:
            del self._open[response_id]
            decode_s = (response.attempt_last_ms - response.attempt_first_ms) / 1000
            if response.attempt_tokens >= 2 and decode_s > 0:
                rate = (response.attempt_tokens - 1) / decode_s
                observed.append(Observation("tokens_per_s", response.model, rate, response.ended_ms))
        return observed
