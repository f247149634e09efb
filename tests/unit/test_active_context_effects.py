"""What each event does to a conversation's cached turns, and which cached turns a prompt sees."""

from __future__ import annotations

import json

from projections.active_context import STARTED, Effect, effect, visible_turns
from schemas.events import (
    ChatTurn,
    ConversationStarted,
    MessageAccepted,
    MessageBlocked,
    MessageSubmitted,
    ResponseCancelled,
    ResponseCompleted,
    ResponseFailed,
    Usage,
    new_id,
)

IDS = {"conversation_id": "c", "user_id": "u", "message_id": new_id(), "response_id": new_id()}


def turn(role: str, content: str, status: str) -> str:
    return json.dumps({"role": role, "content": content, "status": status})


def test_each_event_maps_to_one_effect_on_its_turn() -> None:
    message_id, response_id = IDS["message_id"], IDS["response_id"]
    usage = Usage(prompt_tokens=1, completion_tokens=1)
    assert effect(ConversationStarted(conversation_id="c", user_id="u")) == Effect("start")
    assert effect(MessageSubmitted(**IDS, content="q", model="m")) == Effect("put", message_id, turn("user", "q", "pending"))
    assert effect(MessageAccepted(**IDS, model="m")) == Effect("status", message_id, "accepted")
    assert effect(MessageBlocked(**IDS, categories=[], reason="r")) == Effect("drop", message_id)
    assert effect(ResponseCompleted(**IDS, text="a", finish_reason="stop", usage=usage)) == Effect(
        "put", response_id, turn("assistant", "a", "completed")
    )
    assert effect(ResponseCancelled(**IDS, text="par")) == Effect("put", response_id, turn("assistant", "par", "cancelled"))


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
