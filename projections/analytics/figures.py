"""The live figures `steno analytics` keeps, as a pure function of the events it has read.

Totals count everything read since the consumer started (Prometheus counters: a restart resets
them, and `rate()` copes). Per-minute rates, blocked ratios, quantiles and active conversations
are over recent event time (settings.analytics windows), so a replay of old history moves the
totals only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from infra.settings import AnalyticsSettings
from projections.analytics.timings import Observation, ResponseTimings, millis
from projections.analytics.windows import LastSeen, Quantiles, WindowedCounts, WindowedSamples
from schemas.events import (
    Event,
    MessageAccepted,
    MessageBlocked,
    MessageSubmitted,
    ResponseCancelled,
    ResponseCompleted,
    ResponseEnded,
    ResponseFailed,
    TokenGenerated,
)

# How each final event of a message's reply counts on the conversation log.
OUTCOMES: dict[type[Event], str] = {
    ResponseCompleted: "completed",
    ResponseFailed: "failed",
    ResponseCancelled: "cancelled",
    MessageBlocked: "blocked",
}


@dataclass(frozen=True)
class Snapshot:
    """The figures at one moment; immutable, so a scrape or the view can read it from any thread."""

    at_ms: int
    events_total: dict[str, int]  # by event type
    messages_total: int
    messages_per_minute: float
    responses_total: dict[str, int]  # by outcome: completed, failed, cancelled, blocked
    responses_per_minute: dict[str, float]
    blocked_total: dict[str, int]  # by moderation category
    blocked_ratio: dict[str, float]  # by category: its share of the messages moderated in the window
    ttft_s: dict[str, Quantiles]  # by model
    tokens_per_s: dict[str, Quantiles]
    active_conversations: int
    open_responses: int  # held while their submission and their tokens are joined


class Figures:
    def __init__(self, config: AnalyticsSettings) -> None:
        self._config = config
        rate_ms, window_ms = config.rate_window_s * 1000, config.window_s * 1000
        self._events: Counter[str] = Counter()
        self._messages: WindowedCounts[str] = WindowedCounts(rate_ms)
        self._responses: WindowedCounts[str] = WindowedCounts(rate_ms)
        self._moderated: WindowedCounts[str] = WindowedCounts(window_ms)  # by verdict: accepted, blocked
        self._blocked: WindowedCounts[str] = WindowedCounts(window_ms)  # by category
        self._conversations: LastSeen[str] = LastSeen(window_ms)
        self._timings = ResponseTimings(config.max_open_responses)
        self._samples: dict[tuple[str, str], WindowedSamples] = {}

    def apply(self, event: Event, now_ms: int) -> None:
        """Count one event read from the log at `now_ms`."""
        at = millis(event.occurred_at)
        self._events[event.type] += 1  # type: ignore[attr-defined]  # each event class declares its `type`, not the base
        self._conversations.add(event.conversation_id, at, now_ms)
        if isinstance(event, MessageSubmitted):
            self._messages.add("submitted", at, now_ms)
        if isinstance(event, MessageAccepted):
            self._moderated.add("accepted", at, now_ms)
        if isinstance(event, MessageBlocked):
            self._moderated.add("blocked", at, now_ms)
            for category in event.categories:
                self._blocked.add(category, at, now_ms)
        if (outcome := OUTCOMES.get(type(event))) is not None:
            self._responses.add(outcome, at, now_ms)
        for observation in self._timings_of(event):
            self._sample(observation, now_ms)

    def snapshot(self, now_ms: int) -> Snapshot:
        moderated = self._moderated.recent(now_ms).total()
        return Snapshot(
            at_ms=now_ms,
            events_total=dict(self._events),
            messages_total=self._messages.totals["submitted"],
            messages_per_minute=self._per_minute(self._messages.recent(now_ms)["submitted"]),
            responses_total=dict(self._responses.totals),
            responses_per_minute={
                outcome: self._per_minute(count) for outcome, count in self._responses.recent(now_ms).items()
            },
            blocked_total=dict(self._blocked.totals),
            blocked_ratio={category: count / moderated for category, count in self._blocked.recent(now_ms).items()},
            ttft_s=self._quantiles("ttft_s", now_ms),
            tokens_per_s=self._quantiles("tokens_per_s", now_ms),
            active_conversations=self._conversations.count(now_ms),
            open_responses=len(self._timings),
        )

    def _timings_of(self, event: Event) -> list[Observation]:
        if isinstance(event, MessageSubmitted):
            return self._timings.submitted(event)
        if isinstance(event, TokenGenerated):
            return self._timings.token(event)
        if isinstance(event, ResponseEnded):
            return self._timings.ended(event)
        return []

    def _sample(self, observation: Observation, now_ms: int) -> None:
        key = (observation.figure, observation.model)
        if key not in self._samples:
            self._samples[key] = WindowedSamples(self._config.window_s * 1000, self._config.max_samples)
        self._samples[key].add(observation.value, observation.at_ms, now_ms)

    def _quantiles(self, figure: str, now_ms: int) -> dict[str, Quantiles]:
        by_model = {model: samples for (name, model), samples in self._samples.items() if name == figure}
        quantiles = {model: samples.quantiles(now_ms) for model, samples in by_model.items()}
        return {model: q for model, q in quantiles.items() if q is not None}

    def _per_minute(self, count: int) -> float:
        return count * 60 / self._config.rate_window_s
