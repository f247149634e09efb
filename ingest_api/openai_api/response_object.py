"""OpenAI's Responses API shapes for a steno reply: the Response object and its stream events.

The event sequence is computed from the reply alone (created, in_progress, the message item and
its text part opened at the first delta, one delta per piece, the closing events, then one of
completed / incomplete / failed), so the same log always yields the same sequence numbers:
that is what lets `?starting_after=N` resume a stream exactly, even after the reply ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ingest_api.openai_api.reply import Delta, Ending
from schemas.events import Usage, id_created_ms

RESPONSE_PREFIX = "resp_"
TERMINAL_EVENTS = {"completed": "response.completed", "failed": "response.failed"}


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


async def stream_events(meta: ResponseMeta, reply: AsyncIterator[Delta | Ending]) -> AsyncIterator[dict[str, Any]]:
    """The reply as Responses stream events, each with its `sequence_number`."""
    sequence = 0

    def numbered(kind: str, **fields: Any) -> dict[str, Any]:
        nonlocal sequence
        sequence += 1
        return {"type": kind, "sequence_number": sequence - 1, **fields}

    yield numbered("response.created", response=response_object(meta, "", None))
    yield numbered("response.in_progress", response=response_object(meta, "", None))
    text, where = "", {"item_id": meta.item_id, "output_index": 0}
    async for item in reply:
        if isinstance(item, Delta):
            if not text:
                yield numbered("response.output_item.added", output_index=0, item=_message(meta, "", "in_progress", []))
                yield numbered("response.content_part.added", **where, content_index=0, part=_text_part(""))
            text += item.text
            yield numbered("response.output_text.delta", **where, content_index=0, delta=item.text, logprobs=[])
            continue
        if text:
            status = _item_status(item)
            yield numbered("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
            yield numbered("response.content_part.done", **where, content_index=0, part=_text_part(text))
            yield numbered("response.output_item.done", output_index=0, item=_message(meta, text, status))
        final = response_object(meta, text, item)
        yield numbered(TERMINAL_EVENTS.get(final["status"], "response.incomplete"), response=final)
        return


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
