"""The pure parts of the OpenAI-compatible API: request messages to a prompt, a reply's events to
deltas (across a generation restart), and a reply to numbered Responses events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Literal

import pytest
from sse_starlette import ServerSentEvent

from ingest_api.openai_api.chat_completions import DeltaEncoder
from ingest_api.openai_api.errors import OpenAIError
from ingest_api.openai_api.exchange import Exchange
from ingest_api.openai_api.prompt import Turn, prompt, turn
from ingest_api.openai_api.reply import DIVERGED, Delta, Ending, reply, reply_batches
from ingest_api.openai_api.response_object import ResponseMeta, response_object, stream_events
from ingest_api.positions import LoggedEvent, TokenStreamEvent
from schemas.events import ResponseEnded, ResponseRestarted, TokenGenerated, Usage, new_id

Outcome = Literal["completed", "failed", "cancelled", "blocked"]
IDS: dict[str, Any] = {"conversation_id": "c", "user_id": "u", "response_id": "r"}


def logged(*events: TokenStreamEvent) -> AsyncIterator[LoggedEvent]:
    async def iterate() -> AsyncIterator[LoggedEvent]:
        for offset, event in enumerate(events):
            yield LoggedEvent(offset, event)

    return iterate()


def tokens(*texts: str, attempt: int = 1) -> list[TokenGenerated]:
    return [TokenGenerated(**IDS, seq=i, text=t, attempt=attempt) for i, t in enumerate(texts)]


def ended(outcome: Outcome = "completed", finish_reason: str = "stop") -> ResponseEnded:
    return ResponseEnded(
        **IDS, outcome=outcome, finish_reason=finish_reason, usage=Usage(prompt_tokens=5, completion_tokens=2)
    )


async def one_by_one(items: AsyncIterator[Delta | Ending]) -> AsyncIterator[list[Delta | Ending]]:
    async for item in items:
        yield [item]


async def listed(batches: list[list[LoggedEvent]]) -> AsyncIterator[list[LoggedEvent]]:
    for batch in batches:
        yield batch


async def collected(events: AsyncIterator[LoggedEvent]) -> list[Delta | Ending]:
    return [item async for item in reply(events)]


def test_system_messages_become_instructions_and_earlier_turns_the_context() -> None:
    result = prompt(
        [Turn("developer", "be brief"), Turn("user", "a"), Turn("assistant", "b"), Turn("user", "c")],
        instructions="You are steno.",
        max_tokens=7,
    )

    assert result.content == "c"
    assert result.options.instructions == "You are steno.\n\nbe brief"
    assert [(t.role, t.content) for t in result.options.context] == [("user", "a"), ("assistant", "b")]
    assert result.options.max_tokens == 7
    assert result.title == "a"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "tool", "content": "x"}, "messages.3.role"),
        ({"role": "user", "content": [{"type": "image_url", "image_url": {}}]}, "messages.3.content.0"),
        ({"role": "user", "content": 42}, "messages.3.content"),
        ({"type": "function_call", "role": "user"}, "messages.3.type"),
    ],
)
def test_what_steno_cannot_honour_is_refused_naming_the_field(message: dict, param: str) -> None:
    with pytest.raises(OpenAIError) as refused:
        turn(message, "messages.3")

    assert refused.value.status_code == 400 and refused.value.param == param


def test_a_conversation_must_end_with_a_non_empty_user_message() -> None:
    for turns in ([], [Turn("user", "q"), Turn("assistant", "a")], [Turn("user", "   ")]):
        with pytest.raises(OpenAIError):
            prompt(turns)


async def test_a_reply_is_its_tokens_then_its_ending() -> None:
    items = await collected(logged(*tokens("Hel", "lo"), ended()))

    assert items[:2] == [Delta("Hel"), Delta("lo")]
    assert items[2] == Ending("completed", "stop", "", Usage(prompt_tokens=5, completion_tokens=2), "Hello")


async def test_a_restart_that_repeats_the_text_sends_only_what_is_new() -> None:
    restarted = ResponseRestarted(**IDS, attempt=2)
    items = await collected(logged(*tokens("Hel", "lo"), restarted, *tokens("He", "llo", " there", attempt=2), ended()))

    assert [i.text for i in items if isinstance(i, Delta)] == ["Hel", "lo", " there"]
    assert items[-1].text == "Hello there"


async def test_a_restart_that_says_something_else_fails_the_reply() -> None:
    restarted = ResponseRestarted(**IDS, attempt=2)
    items = await collected(logged(*tokens("Yes"), restarted, *tokens("No", attempt=2), ended()))

    assert items[-1] == Ending("failed", "", DIVERGED, None, "Yes")


async def test_a_restart_that_ends_short_of_the_sent_text_fails_the_reply() -> None:
    restarted = ResponseRestarted(**IDS, attempt=2)
    items = await collected(logged(*tokens("Hello"), restarted, *tokens("Hel", attempt=2), ended()))

    assert isinstance(items[-1], Ending) and items[-1].outcome == "failed"


async def test_a_reply_in_batches_is_the_same_reply_grouped_as_its_events_arrived() -> None:
    restarted = ResponseRestarted(**IDS, attempt=2)
    events: list[TokenStreamEvent] = [
        *tokens("Hel", "lo"),
        restarted,
        *tokens("He", "llo", "!", attempt=2),
        ended(),
        *tokens("late"),
    ]
    positioned = [LoggedEvent(offset, event) for offset, event in enumerate(events)]
    arrivals = [positioned[:1], positioned[1:4], positioned[4:5], positioned[5:]]  # a stray event after the ending

    batched = [batch async for batch in reply_batches(listed(arrivals))]

    assert batched == [[Delta("Hel")], [Delta("lo")], [Delta("!"), (await collected(logged(*events)))[-1]]]
    assert [item for batch in batched for item in batch] == await collected(logged(*events))


async def test_responses_events_are_numbered_the_same_way_every_time() -> None:
    meta = ResponseMeta(new_id(), "scripted")
    log: list[TokenStreamEvent] = [*tokens("Hi", "!"), ended()]

    first = [e async for batch in stream_events(meta, one_by_one(reply(logged(*log)))) for e in batch]
    arrivals = [[LoggedEvent(0, log[0])], [LoggedEvent(1, log[1]), LoggedEvent(2, log[2])]]
    second = [e async for batch in stream_events(meta, reply_batches(listed(arrivals))) for e in batch]

    assert first == second
    assert [e["sequence_number"] for e in first] == list(range(len(first)))
    assert [e["type"] for e in first] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert first[-1]["response"]["output"][0]["content"][0]["text"] == "Hi!"
    assert first[-1]["response"]["usage"]["total_tokens"] == 7


@pytest.mark.parametrize(
    ("ending", "status", "event", "details"),
    [
        (Ending("blocked", "", "weapons", None, ""), "incomplete", "response.incomplete", {"reason": "content_filter"}),
        (
            Ending("completed", "length", "", None, "x"),
            "incomplete",
            "response.incomplete",
            {"reason": "max_output_tokens"},
        ),
        (Ending("cancelled", "", "", None, "x"), "cancelled", "response.incomplete", None),
        (Ending("failed", "", "Triton down", None, ""), "failed", "response.failed", None),
    ],
)
async def test_each_outcome_has_its_responses_status(
    ending: Ending, status: str, event: str, details: dict | None
) -> None:
    async def just(item: Ending) -> AsyncIterator[list[Delta | Ending]]:
        yield [item]

    final = [e async for batch in stream_events(ResponseMeta(new_id(), "scripted"), just(ending)) for e in batch][-1]

    assert (final["type"], final["response"]["status"]) == (event, status)
    assert final["response"]["incomplete_details"] == details
    assert (final["response"]["error"] is not None) == (status == "failed")
    assert response_object(ResponseMeta(new_id(), "scripted"), ending.text, ending)["status"] == status


def test_a_streamed_chat_chunk_is_the_bytes_sse_starlette_wrote_for_its_json() -> None:
    """Clients parse the same bytes as when each chunk was a dict through json.dumps and
    sse-starlette: spacing, escapes (non-ASCII, quotes, line breaks, NUL inside a token)."""
    chat = Exchange(conversation_id="c", response_id=new_id(), model="scripted")
    encoder = DeltaEncoder(chat)
    for text in ["t0 ", "", 'say "hi"\n', "naïve ☕ 😀", "\\ \r\t\u2028", "\x00"]:
        chunk = {
            "id": f"chatcmpl-{chat.response_id}",
            "object": "chat.completion.chunk",
            "created": chat.created,
            "model": "scripted",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None, "logprobs": None}],
        }
        assert encoder.encode(text) == ServerSentEvent(data=json.dumps(chunk)).encode()
