"""OpenAI's Responses API shapes for a steno reply: the Response object and its stream events.

The event sequence is computed from the reply alone (created, in_progress, the message item and
its text part opened at the first delta, one delta per piece, the closing events, then one of
completed / incomplete / failed), so the same log always yields the same sequence numbers:
that is what lets `?starting_after=N` resume a stream exactly, even after the reply ended.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from ingest_api.openai_api.reply import SHUTTING_DOWN, SHUTTING_DOWN_CODE, Delta, Ending
from schemas.events import Usage, id_created_ms

RESPONSE_PREFIX = "resp_"
TERMINAL_EVENTS = {"completed": "response.completed", "failed": "response.failed"}
ENDING_TYPES = {*TERMINAL_EVENTS.values(), "response.incomplete"}  # a stream's last event is one of these


@dataclass(frozen=True)
class ResponseMeta:
    """What a Response object echoes besides the reply itself."""

    response_id: str  # steno's id; OpenAI clients see it as resp_<id>
    model: str
    background: bool = False
    previous_response_id: str | None = None
    instructions: str | None = None

    @property
    def openai_id(self) -> str:
        return RESPONSE_PREFIX + self.response_id

    @property
    def item_id(self) -> str:
        return "msg_" + self.response_id


def response_object(meta: ResponseMeta, text: str, ending: Ending | None) -> dict[str, Any]:
    """The Response: in progress while `ending` is None, else its final state."""
    status, error, incomplete = _final_state(ending) if ending else ("in_progress", None, None)
    output = [_message(meta, text, _item_status(ending))] if text or (ending and ending.outcome == "completed") else []
    usage = {"usage": _usage(ending.usage)} if ending and ending.usage else {}  # OpenAI's may be absent, not null
    return usage | {
        "id": meta.openai_id,
        "object": "response",
        "created_at": (id_created_ms(meta.response_id) or 0) // 1000,  # integer seconds, as OpenAI sends
        "status": status,
        "model": meta.model,
        "output": output,
        "error": error,
        "incomplete_details": incomplete,
        "background": meta.background,
        "previous_response_id": meta.previous_response_id,
        "instructions": meta.instructions,
        "metadata": {},
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "temperature": None,
        "top_p": None,
    }


class StreamEvents:
    """The reply as Responses stream events, each with its `sequence_number`: the opening ones,
    then those of each delta and of the ending, in order."""

    def __init__(self, meta: ResponseMeta) -> None:
        self._meta = meta
        self._sequence = 0
        self._text = ""
        self.ended = False

    def opening(self) -> list[dict[str, Any]]:
        in_progress = response_object(self._meta, "", None)
        return [
            self._numbered("response.created", response=in_progress),
            self._numbered("response.in_progress", response=in_progress),
        ]

    def of(self, item: Delta | Ending) -> list[dict[str, Any]]:
        return self._delta(item) if isinstance(item, Delta) else self._ending(item)

    def _delta(self, delta: Delta) -> list[dict[str, Any]]:
        events = []
        if not self._text:
            item = _message(self._meta, "", "in_progress", [])
            events.append(self._numbered("response.output_item.added", output_index=0, item=item))
            events.append(self._in_part("response.content_part.added", part=_text_part("")))
        self._text += delta.text
        events.append(self._in_part("response.output_text.delta", delta=delta.text, logprobs=[]))
        return events

    def _ending(self, ending: Ending) -> list[dict[str, Any]]:
        events, text = [], self._text
        if text:
            item = _message(self._meta, text, _item_status(ending))
            events.append(self._in_part("response.output_text.done", text=text, logprobs=[]))
            events.append(self._in_part("response.content_part.done", part=_text_part(text)))
            events.append(self._numbered("response.output_item.done", output_index=0, item=item))
        self.ended = True
        final = response_object(self._meta, text, ending)
        events.append(self._numbered(TERMINAL_EVENTS.get(final["status"], "response.incomplete"), response=final))
        return events

    def interrupted(self) -> dict[str, Any]:
        """The error event of a stream the API ends before the reply's end (it is shutting down)."""
        return self._numbered("error", code=SHUTTING_DOWN_CODE, message=SHUTTING_DOWN, param=None)

    def _in_part(self, kind: str, **fields: Any) -> dict[str, Any]:
        """An event of the message's one text part."""
        return self._numbered(kind, item_id=self._meta.item_id, output_index=0, content_index=0, **fields)

    def _numbered(self, kind: str, **fields: Any) -> dict[str, Any]:
        self._sequence += 1
        return {"type": kind, "sequence_number": self._sequence - 1, **fields}


async def stream_events(
    meta: ResponseMeta, reply: AsyncIterator[list[Delta | Ending]]
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """The reply's stream events, in a batch for each batch of the reply (the opening events
    first): one socket write for each burst of tokens.

    A foreground stream the API ends before the reply's end (a deploy) ends with an error event:
    its reply is stopped, and a stream that just stopped would read as a whole, shorter one. A
    background one is resumed by its client instead (`starting_after`), the numbering unchanged."""
    events = StreamEvents(meta)
    yield events.opening()
    async for batch in reply:
        yield [event for item in batch for event in events.of(item)]
    if not events.ended and not meta.background:
        yield [events.interrupted()]


def _final_state(ending: Ending) -> tuple[str, dict[str, str] | None, dict[str, str] | None]:
    """status, error, incomplete_details."""
    if ending.outcome == "failed":
        return "failed", {"code": "server_error", "message": f"generation failed: {ending.detail}"}, None
    if ending.outcome == "blocked":
        return "incomplete", None, {"reason": "content_filter"}
    if ending.outcome == "cancelled":
        return "cancelled", None, None
    if ending.finish_reason == "length":
        return "incomplete", None, {"reason": "max_output_tokens"}
    return "completed", None, None


def _item_status(ending: Ending | None) -> str:
    if ending is None:
        return "in_progress"
    return "completed" if ending.outcome == "completed" and ending.finish_reason != "length" else "incomplete"


def _message(meta: ResponseMeta, text: str, status: str, content: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": meta.item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [_text_part(text)] if content is None else content,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
