"""What the history view writes for each event, and the write timestamps that order those writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from projections.history import OUTCOME, STAGES, MessageEvent, replaced_time, turn_cells, write_time
from projections.status import Status
from schemas.events import (
    ConversationRenamed,
    ConversationStarted,
    MessageAccepted,
    MessageBlocked,
    MessageSubmitted,
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    Usage,
    id_created_ms,
    new_id,
)

MESSAGE_ID, RESPONSE_ID = new_id(), new_id()
IDS: dict[str, Any] = {"conversation_id": "c", "user_id": "u", "message_id": MESSAGE_ID, "response_id": RESPONSE_ID}
AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
USAGE = Usage(prompt_tokens=1, completion_tokens=1)


def lifecycle(occurred_at: datetime) -> list[MessageEvent]:
    """One message's events in pipeline order (blocked and completed both, to compare stages)."""
    at: dict[str, Any] = {"occurred_at": occurred_at}
    return [
        MessageSubmitted(**IDS, **at, content="hi", model="scripted"),
        MessageAccepted(**IDS, **at, model="scripted", content="hi", submitted_offset=0),
        MessageBlocked(**IDS, **at, categories=["x"], reason="no"),
        ResponseCompleted(**IDS, **at, text="hi!", finish_reason="stop", usage=USAGE),
    ]


def test_later_lifecycle_stages_get_later_write_times_whatever_the_clocks_say() -> None:
    times = [write_time(event) for event in lifecycle(AT)]
    assert times == sorted(times) and len(set(times)) == len(times)
    skewed = [write_time(event) for event in lifecycle(AT - timedelta(hours=1))]
    assert skewed == times  # derived from the message id, not from any machine's clock


def test_write_time_is_the_message_ids_creation_time_in_microseconds() -> None:
    submitted = lifecycle(AT)[0]
    assert isinstance(submitted, MessageSubmitted)
    assert write_time(submitted) == (id_created_ms(submitted.message_id) or 0) * 1000 + STAGES[MessageSubmitted]


def test_a_conversation_start_is_stamped_with_its_own_time() -> None:
    started = ConversationStarted(conversation_id="c", user_id="u", occurred_at=AT)
    assert write_time(started) == int(AT.timestamp()) * 1_000_000


UUID1 = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"


@pytest.mark.parametrize("message_id", ["not-a-uuid", UUID1])
def test_message_ids_that_are_not_uuid7_are_refused(message_id: str) -> None:
    with pytest.raises(ValueError, match="UUIDv7"):
        write_time(MessageAccepted(**{**IDS, "message_id": message_id}, model="m", content="hi", submitted_offset=0))


def test_a_submitted_message_creates_the_user_row_and_a_pending_reply_row() -> None:
    rows = turn_cells(lifecycle(AT)[0])
    assert rows[MESSAGE_ID] == {
        "role": "user",
        "content": "hi",
        "status": Status.PENDING,
        "model": "scripted",
        "created_at": AT,
    }
    assert rows[RESPONSE_ID] == {
        "role": "assistant",
        "content": "",
        "status": Status.PENDING,
        "reply_to": MESSAGE_ID,
        "model": "scripted",
        "created_at": AT,
    }


def test_a_blocked_message_blocks_both_rows_and_says_why_on_the_reply() -> None:
    rows = turn_cells(MessageBlocked(**IDS, categories=["weapons", "malware"], reason="Not allowed."))
    assert rows == {
        MESSAGE_ID: {"status": Status.BLOCKED},
        RESPONSE_ID: {"status": Status.BLOCKED, "content": "Not allowed.", "detail": "weapons, malware"},
    }


@pytest.mark.parametrize(
    ("event", "cells"),
    [
        (
            MessageAccepted(**IDS, model="m", content="hi", submitted_offset=0),
            {MESSAGE_ID: {"status": Status.ACCEPTED}},
        ),
        (ResponseFailed(**IDS, error="boom"), {RESPONSE_ID: OUTCOME | {"status": Status.FAILED, "detail": "boom"}}),
        (ResponseCancelled(**IDS, text="par"), {RESPONSE_ID: OUTCOME | {"status": Status.CANCELLED, "content": "par"}}),
    ],
)
def test_later_events_touch_only_the_cells_they_change(event: MessageEvent, cells: dict[str, Any]) -> None:
    assert turn_cells(event) == cells


def regeneration(occurred_at: datetime = AT) -> MessageSubmitted:
    """The same message submitted again for a new reply, replacing RESPONSE_ID."""
    ids: dict[str, Any] = {**IDS, "response_id": new_id()}
    return MessageSubmitted(**ids, occurred_at=occurred_at, content="hi", model="scripted", replaces=RESPONSE_ID)


def test_a_regeneration_creates_only_the_new_reply_row() -> None:
    again = regeneration()
    assert turn_cells(again) == {
        again.response_id: {
            "role": "assistant",
            "content": "",
            "status": Status.PENDING,
            "reply_to": MESSAGE_ID,
            "model": "scripted",
            "created_at": AT,
        }
    }


def test_the_replaced_reply_is_retired_after_every_event_of_its_own_whatever_the_clocks_say() -> None:
    old_reply_times = [write_time(event) for event in lifecycle(AT)]
    assert replaced_time(regeneration(AT - timedelta(hours=1))) > max(old_reply_times)
    assert replaced_time(regeneration(AT)) == replaced_time(regeneration(AT + timedelta(hours=1)))


def test_a_later_rename_wins_over_the_start_and_an_earlier_rename() -> None:
    started = ConversationStarted(conversation_id="c", user_id="u", occurred_at=AT)
    renames = [
        ConversationRenamed(conversation_id="c", user_id="u", title=t, occurred_at=AT + timedelta(seconds=s))
        for s, t in ((1, "first"), (2, "second"))
    ]
    assert write_time(started) < write_time(renames[0]) < write_time(renames[1])
