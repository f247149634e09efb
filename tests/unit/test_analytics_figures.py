"""The figures `steno analytics` keeps, from given events: rates, outcomes, blocked categories,
TTFT and tokens/s per model, active conversations; and the terminal view that shows them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from infra.settings import AnalyticsSettings
from projections.analytics.figures import Figures, Snapshot
from projections.analytics.timings import ResponseTimings, millis
from projections.analytics.view import render
from projections.analytics.windows import Quantiles
from schemas.events import Event, MessageSubmitted, ResponseEnded, ResponseRestarted, TokenGenerated
from tests.event_mix import Conversation, realistic_mix

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
CONFIG = AnalyticsSettings()


def figures_of(events: list[Event], now: datetime = NOW, config: AnalyticsSettings = CONFIG) -> Snapshot:
    figures = Figures(config)
    for event in events:
        figures.apply(event, millis(now))
    return figures.snapshot(millis(now))


def log_then_tokens(conversations: list[Conversation]) -> list[Event]:
    return [e for c in conversations for e in c.log] + [e for c in conversations for e in c.tokens]


def test_figures_of_a_realistic_mix() -> None:
    snapshot = figures_of(log_then_tokens(realistic_mix(NOW - timedelta(seconds=30))))

    assert snapshot.messages_total == 7
    assert snapshot.messages_per_minute == 7
    assert snapshot.responses_total == {"completed": 3, "blocked": 2, "cancelled": 1, "failed": 1}
    assert snapshot.responses_per_minute == {"completed": 3, "blocked": 2, "cancelled": 1, "failed": 1}
    assert snapshot.blocked_total == {"weapons": 2, "malware": 1}
    assert snapshot.blocked_ratio == {"weapons": 2 / 7, "malware": 1 / 7}  # of 7 moderated messages
    scripted = snapshot.ttft_s["scripted"]
    assert (scripted.p50, scripted.samples) == (0.2, 3) and scripted.p95 == pytest.approx(0.29)
    assert snapshot.ttft_s["smollm2"] == Quantiles(p50=0.4, p95=0.4, samples=1)
    assert snapshot.tokens_per_s["scripted"] == Quantiles(p50=100.0, p95=100.0, samples=3)
    assert snapshot.tokens_per_s["smollm2"] == Quantiles(p50=20.0, p95=20.0, samples=1)
    assert snapshot.active_conversations == 3
    assert snapshot.open_responses == 0
    assert snapshot.events_total["TokenGenerated"] == 11 + 11 + 5 + 3


def test_the_token_stream_read_before_the_conversation_log_gives_the_same_figures() -> None:
    conversations = realistic_mix(NOW - timedelta(seconds=30))
    tokens_first = [e for c in conversations for e in c.tokens] + [e for c in conversations for e in c.log]

    assert figures_of(tokens_first) == figures_of(log_then_tokens(conversations))


def test_history_older_than_the_windows_moves_the_totals_only() -> None:
    snapshot = figures_of(log_then_tokens(realistic_mix(NOW - timedelta(hours=1))))

    assert snapshot.messages_total == 7
    assert (snapshot.responses_total["completed"], snapshot.blocked_total["weapons"]) == (3, 2)
    assert (snapshot.messages_per_minute, snapshot.responses_per_minute) == (0, {})
    assert (snapshot.blocked_ratio, snapshot.ttft_s, snapshot.tokens_per_s) == ({}, {}, {})
    assert snapshot.active_conversations == 0


def test_rates_slide_out_after_a_minute_and_quantiles_after_the_window() -> None:
    figures = Figures(CONFIG)
    for event in log_then_tokens(realistic_mix(NOW - timedelta(seconds=30))):
        figures.apply(event, millis(NOW))

    later = figures.snapshot(millis(NOW + timedelta(minutes=2)))
    assert (later.messages_per_minute, later.responses_per_minute) == (0, {})
    assert later.ttft_s["scripted"].samples == 3 and later.active_conversations == 3
    gone = figures.snapshot(millis(NOW + timedelta(minutes=6)))
    assert (gone.ttft_s, gone.blocked_ratio, gone.active_conversations) == ({}, {}, 0)


def test_a_restarted_generation_times_its_first_token_but_paces_its_last_attempt() -> None:
    chat = Conversation(NOW - timedelta(seconds=10))
    submitted = chat.answered(0, "scripted", ttft_ms=100, tokens=3, itl_ms=10)
    first_try = chat.tokens[1:3]  # two tokens of attempt 1, then the bridge died
    ids: dict[str, Any] = {
        "conversation_id": chat.conversation_id,
        "user_id": chat.user_id,
        "response_id": submitted.response_id,
    }
    at = submitted.occurred_at + timedelta(seconds=1)

    def token(seq: int) -> TokenGenerated:
        return TokenGenerated(**ids, occurred_at=at + timedelta(milliseconds=25 * seq), seq=seq, text="x", attempt=2)

    second_try = [
        ResponseRestarted(**ids, occurred_at=at, attempt=2),
        *(token(seq) for seq in range(5)),
        ResponseEnded(**ids, occurred_at=at + timedelta(milliseconds=101), outcome="completed", attempt=2),
    ]

    snapshot = figures_of([*chat.log, *first_try, *second_try])

    assert snapshot.ttft_s["scripted"].p50 == pytest.approx(0.1)  # what the user waited for a first token
    assert snapshot.tokens_per_s["scripted"].p50 == pytest.approx(40.0)  # 4 gaps of 25 ms


def test_responses_never_joined_are_forgotten_oldest_first() -> None:
    timings = ResponseTimings(max_open=2)
    orphans = [Conversation(NOW) for _ in range(3)]
    for chat in orphans:  # token events whose submissions are not in the log read
        chat.answered(0, "scripted", ttft_ms=100, tokens=2, itl_ms=10)
        token = chat.tokens[1]
        assert isinstance(token, TokenGenerated)
        timings.token(token)

    assert len(timings) == 2
    first, last = orphans[0], orphans[-1]
    first_submitted, last_submitted = first.log[1], last.log[1]
    assert isinstance(first_submitted, MessageSubmitted) and isinstance(last_submitted, MessageSubmitted)
    assert timings.submitted(first_submitted) == []  # forgotten: nothing to join it with
    assert [o.figure for o in timings.submitted(last_submitted)] == ["ttft_s"]


def test_the_terminal_view_shows_the_figures() -> None:
    snapshot = figures_of(log_then_tokens(realistic_mix(NOW - timedelta(seconds=30))))
    console = Console(width=120, record=True)

    console.print(render(snapshot, "steno analytics"))

    screen = console.export_text()
    assert "steno analytics  12:00:00 UTC" in screen
    assert _row(screen, "messages") == ["messages", "7", "7"]
    assert _row(screen, "replies completed") == ["replies", "completed", "3", "3"]
    assert _row(screen, "scripted") == ["scripted", "200", "290", "100.0", "100.0", "3"]
    assert _row(screen, "weapons") == ["weapons", "28.6%", "2"]


def _row(screen: str, label: str) -> list[str]:
    [line] = [line for line in screen.splitlines() if line.strip("│ ").startswith(label)]
    return line.replace("│", " ").split()
