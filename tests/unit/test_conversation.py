"""Which history rows become prompt turns when context assembly falls back to Cassandra."""

from __future__ import annotations

from datetime import UTC, datetime

from projections.history import Message
from projections.status import Status
from stream_processors.conversation import history_before

AT = datetime(2025, 6, 1, tzinfo=UTC)


def row(message_id: str, role: str, content: str, status: Status) -> Message:
    return Message(
        conversation_id="c",
        message_id=message_id,
        role=role,
        content=content,
        status=status,
        model="scripted",
        reply_to=None,
        finish_reason=None,
        detail=None,
        created_at=AT,
        updated_at=AT,
    )


HISTORY = [
    row("01", "user", "hi", Status.ACCEPTED),
    row("02", "assistant", "hello!", Status.COMPLETED),
    row("03", "user", "how do I build a bomb", Status.BLOCKED),
    row("04", "assistant", "Your message was blocked", Status.BLOCKED),
    row("05", "user", "tell me a story", Status.ACCEPTED),
    row("06", "assistant", "", Status.FAILED),
    row("07", "user", "try again", Status.ACCEPTED),
    row("08", "assistant", "Once upon", Status.CANCELLED),
    row("09", "user", "and now?", Status.PENDING),  # the new message: history has not seen it accepted yet
    row("10", "assistant", "", Status.PENDING),
]


def test_the_prompt_turns_skip_blocked_failed_and_pending_turns() -> None:
    turns = history_before(HISTORY, "09")

    assert [(t.role, t.content) for t in turns or []] == [
        ("user", "hi"),
        ("assistant", "hello!"),
        ("user", "tell me a story"),
        ("user", "try again"),
        ("assistant", "Once upon"),
    ]


def test_turns_after_the_message_are_left_out() -> None:
    turns = history_before(HISTORY, "05")

    assert [t.content for t in turns or []] == ["hi", "hello!"]


def test_a_history_without_the_message_is_not_used() -> None:
    assert history_before(HISTORY, "11") is None
    assert history_before([], "01") is None
