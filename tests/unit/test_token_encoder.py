"""The bridge's fast path for token events: exactly the bytes the pydantic model would write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.events import TokenGenerated, id_created_ms, new_id, utc_now
from schemas.serde import TokenEncoder, decode, encode

IDS = {"conversation_id": "c-1", "user_id": "u-1", "response_id": "r-1", "attempt": 1}
TEXTS = ["Hello ", "", 'say "hi"\\n', "tab\there\nnewline\r\x00\x1f", "héllo wörld ", "日本語", "🙂 ", "\u2028\u2029"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize(
    "ids",
    [
        IDS,
        {"conversation_id": 'quote"d\\id', "user_id": "ünïcode", "response_id": "r\n2", "attempt": 7},
    ],
)
def test_the_bytes_are_those_of_the_pydantic_event(ids: dict[str, object], text: str) -> None:
    event_id, occurred_at = new_id(), utc_now()
    expected = TokenGenerated(**ids, seq=41, text=text, event_id=event_id, occurred_at=occurred_at)  # type: ignore[arg-type]

    raw = TokenEncoder(**ids).encode(41, text, event_id, occurred_at)  # type: ignore[arg-type]

    assert raw == encode(expected)
    assert decode(raw) == expected


@pytest.mark.parametrize(
    "occurred_at", [datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2026, 1, 2, 3, 4, 5, 6, UTC)]
)
def test_times_without_and_with_microseconds_are_written_as_pydantic_writes_them(occurred_at: datetime) -> None:
    expected = TokenGenerated(**IDS, seq=0, text="x", event_id="e", occurred_at=occurred_at)  # type: ignore[arg-type]

    assert TokenEncoder(**IDS).encode(0, "x", "e", occurred_at) == encode(expected)  # type: ignore[arg-type]


def test_each_token_gets_a_new_id_and_the_current_time() -> None:
    encoder = TokenEncoder(**IDS)  # type: ignore[arg-type]
    before = utc_now()

    first, second = (decode(encoder.encode(seq, "x")) for seq in (0, 1))

    assert isinstance(first, TokenGenerated) and isinstance(second, TokenGenerated)
    assert first.event_id != second.event_id
    assert id_created_ms(first.event_id) is not None  # a UUIDv7, as new_id makes
    assert before <= first.occurred_at <= second.occurred_at <= utc_now() + timedelta(seconds=1)
    assert (second.seq, second.text, second.response_id, second.attempt) == (1, "x", "r-1", 1)
