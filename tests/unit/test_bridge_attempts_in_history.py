"""Two attempts of one reply can both end it (a bridge frozen past its session timeout comes back
and finishes attempt 1 while attempt 2 runs elsewhere): history keeps the later attempt's
outcome, whole, whatever order the events arrive in."""

from __future__ import annotations

from typing import Any

import pytest

from projections.history import replaced_time, turn_cells, write_time
from schemas.events import (
    MessageSubmitted,
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    Usage,
    new_id,
)

IDS: dict[str, Any] = {"conversation_id": "c", "user_id": "u", "message_id": new_id(), "response_id": new_id()}
USAGE = Usage(prompt_tokens=1, completion_tokens=1)


Ending = ResponseCompleted | ResponseFailed | ResponseCancelled


def ending(kind: str, attempt: int) -> Ending:
    if kind == "completed":
        return ResponseCompleted(**IDS, attempt=attempt, text="hi!", finish_reason="stop", usage=USAGE)
    if kind == "failed":
        return ResponseFailed(**IDS, attempt=attempt, error="triton unavailable")
    return ResponseCancelled(**IDS, attempt=attempt, text="h")


KINDS = ["completed", "failed", "cancelled"]


@pytest.mark.parametrize("earlier", KINDS)
@pytest.mark.parametrize("later", KINDS)
def test_a_later_attempts_outcome_is_written_after_an_earlier_ones(earlier: str, later: str) -> None:
    assert write_time(ending(later, 2)) > write_time(ending(earlier, 1))
    assert write_time(ending(later, 5)) > write_time(ending(earlier, 4))


def test_a_regeneration_retires_the_reply_after_any_of_its_attempts() -> None:
    regenerated = MessageSubmitted(**{**IDS, "response_id": new_id()}, content="hi", model="m", replaces="r")
    assert replaced_time(regenerated) > max(write_time(ending(kind, 1000)) for kind in KINDS)


def test_attempts_stay_within_the_messages_millisecond() -> None:
    """Stamps are the message id's millisecond plus an offset: no attempt reaches the next one."""
    base = write_time(ending("completed", 1)) // 1000
    assert write_time(ending("completed", 10**6)) // 1000 == base


@pytest.mark.parametrize("kind", KINDS)
def test_a_final_event_sets_every_outcome_cell_so_no_earlier_attempts_cell_survives(kind: str) -> None:
    [cells] = turn_cells(ending(kind, 2)).values()
    assert set(cells) == {"status", "content", "finish_reason", "detail"}
