"""What the OpenAI translation produces, in every state, validates against OpenAI's published schemas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ingest_api.openai_api.errors import error_body
from ingest_api.openai_api.reply import Delta, Ending
from ingest_api.openai_api.response_object import ResponseMeta, response_object, stream_events
from schemas.events import Usage, new_id
from tests.openai_conformance import conform

USAGE = Usage(prompt_tokens=5, completion_tokens=2)
ENDINGS = [
    Ending("completed", "stop", "", USAGE, "Hi!"),
    Ending("completed", "length", "", USAGE, "Hi!"),
    Ending("blocked", "", "weapons", None, ""),
    Ending("cancelled", "", "", None, "Hi"),
    Ending("failed", "", "Triton down", None, ""),
]


async def items(ending: Ending) -> AsyncIterator[list[Delta | Ending]]:
    """The reply in two batches: its deltas, then its ending."""
    yield [Delta(piece) for piece in ("Hi", "!")[: len(ending.text) and 2]]
    yield [ending]


@pytest.mark.parametrize("ending", ENDINGS, ids=lambda e: f"{e.outcome}-{e.finish_reason}")
async def test_every_stream_event_and_response_state_conforms(ending: Ending) -> None:
    meta = ResponseMeta(new_id(), "scripted", previous_response_id="resp_x", instructions="be brief")
    events = [event async for batch in stream_events(meta, items(ending)) for event in batch]

    for event in events:
        conform(event, "ResponseStreamEvent")
    conform(response_object(meta, "", None), "Response")
    conform(response_object(meta, ending.text, ending), "Response")


@pytest.mark.parametrize("background", [False, True])
async def test_a_stream_cut_before_its_end_tells_a_foreground_client_so(background: bool) -> None:
    """The API shutting down ends the reply's batches early: a foreground stream (whose reply is
    then stopped) ends with an error event; a background one just ends, to be resumed."""
    meta = ResponseMeta(new_id(), "scripted", background=background)

    async def cut() -> AsyncIterator[list[Delta | Ending]]:
        yield [Delta("Hi")]

    events = [event async for batch in stream_events(meta, cut()) for event in batch]

    for event in events:
        conform(event, "ResponseStreamEvent")
    assert events[-1]["type"] == ("response.output_text.delta" if background else "error")
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


@pytest.mark.parametrize("status", [400, 401, 404, 409, 413, 500, 503])
def test_errors_conform(status: int) -> None:
    body: dict[str, Any] = error_body(status, "what went wrong", param="messages", code="some_code")
    conform(body, "ErrorResponse")
