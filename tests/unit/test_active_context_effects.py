"""What each event does to a conversation's cached turns, and which cached turns a prompt sees."""

from __future__ import annotations

import json
from typing import Any

import pytest

from projections.active_context import STARTED, Effect, effect, visible_turns
from schemas.events import (
    ChatTurn,
    ConversationDeleted,
    ConversationRenamed,
    ConversationStarted,
    Event,
    MessageAccepted,
    MessageBlocked,
    MessageSubmitted,
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    Usage,
    new_id,
)

IDS: dict[str, Any] = {"conversation_id": "c", "user_id": "u", "message_id": new_id(), "response_id": new_id()}


def turn(role: str, content: str, status: str) -> str:
    return json.dumps({"role": role, "content": content, "status": status})


MESSAGE_ID, RESPONSE_ID = IDS["message_id"], IDS["response_id"]
USAGE = Usage(prompt_tokens=1, completion_tokens=1)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (ConversationStarted(conversation_id="c", user_id="u"), Effect("start")),
        (ConversationDeleted(conversation_id="c", user_id="u"), Effect("forget")),
        (ConversationRenamed(conversation_id="c", user_id="u", title="t"), Effect("none")),
        (
            MessageSubmitted(**{**IDS, "response_id": new_id()}, content="q", model="m", replaces=RESPONSE_ID),
            Effect("drop", RESPONSE_ID),
        ),
        (
            MessageSubmitted(**IDS, content="q", model="m"),
            Effect("put", MESSAGE_ID, turn("user", "q", "pending")),
        ),
        (MessageAccepted(**IDS, model="m", content="hi", submitted_offset=0), Effect("status", MESSAGE_ID, "accepted")),
        (MessageBlocked(**IDS, categories=[], reason="r"), Effect("drop", MESSAGE_ID)),
        (
            ResponseCompleted(**IDS, text="a", finish_reason="stop", usage=USAGE),
            Effect("put", RESPONSE_ID, turn("assistant", "a", "completed")),
        ),
        (ResponseCancelled(**IDS, text="p"), Effect("put", RESPONSE_ID, turn("assistant", "p", "cancelled"))),
    ],
)
def test_each_event_maps_to_one_effect_on_its_turn(event: Event, expected: Effect) -> None:
    assert effect(event) == expected


def test_failures_and_empty_cancellations_add_nothing() -> None:
    assert effect(ResponseFailed(**IDS, error="boom")) == Effect("none")
    assert effect(ResponseCancelled(**IDS, text="")) == Effect("none")


def test_prompts_see_accepted_questions_and_finished_answers_in_id_order() -> None:
    a, b, c, d, e = (new_id() for _ in range(5))
    fields = {
        STARTED: "1",
        e: turn("user", "still pending", "pending"),
        c: turn("user", "second", "accepted"),
        a: turn("user", "first", "accepted"),
        d: turn("assistant", "cut short", "cancelled"),
        b: turn("assistant", "answer", "completed"),
    }
    assert visible_turns(fields) == [
        ChatTurn(role="user", content="first"),
        ChatTurn(role="assistant", content="answer"),
        ChatTurn(role="user", content="second"),
        ChatTurn(role="assistant", content="cut short"),
    ]


def test_a_conversation_with_no_turns_yet_has_an_empty_context() -> None:
    assert visible_turns({STARTED: "1"}) == []


def test_a_prompt_for_an_earlier_turn_sees_only_the_turns_before_it() -> None:
    a, b, c, d = (new_id() for _ in range(4))
    fields = {
        STARTED: "1",
        d: turn("assistant", "later answer", "completed"),
        a: turn("user", "first", "accepted"),
        c: turn("user", "regenerated question", "accepted"),
        b: turn("assistant", "answer", "completed"),
    }
    assert visible_turns(fields, before=c) == [
        ChatTurn(role="user", content="first"),
        ChatTurn(role="assistant", content="answer"),
    ]
    assert visible_turns(fields, before=a) == []
