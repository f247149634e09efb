"""`POST /v1/chat/completions`, streaming or not, through the same pipeline as every message.

The request's messages are the whole context (the API is stateless); the exchange is recorded
as a new conversation of the caller's. A streamed reply is `chat.completion.chunk` objects with
one id and `created`, the finish reason on the last choice chunk, an optional usage chunk and
`[DONE]`; an error after the stream began is sent as `data: {"error": ...}`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from infra.settings import settings
from ingest_api.auth import User
from ingest_api.openai_api import exchange as pipeline
from ingest_api.openai_api.errors import OpenAIError, OpenAIRoute, error_body, invalid
from ingest_api.openai_api.exchange import Exchange
from ingest_api.openai_api.prompt import prompt, turn
from ingest_api.openai_api.reply import Delta, Ending
from ingest_api.services import Deps
from schemas.events import Usage

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)

FINISH_REASONS = {"cancelled": "stop", "blocked": "content_filter"}


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields steno honours; sampling knobs are the model's own settings and are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Any] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int = 1
    tools: list[Any] | None = None


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, user: User, deps: Deps
) -> dict[str, Any] | EventSourceResponse:
    pipeline.check_model(body.model)
    if body.n != 1:
        raise invalid("steno generates one choice per request: set n to 1", "n")
    if body.tools:
        raise invalid("tools are not supported by steno's models", "tools")
    turns = [turn(message, f"messages.{index}") for index, message in enumerate(body.messages)]
    request = prompt(turns, max_tokens=body.max_completion_tokens or body.max_tokens)
    chat = await pipeline.begin(deps, user, request, body.model)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventSourceResponse(_streamed(deps, user, chat, include_usage), ping=settings.api.heartbeat_s)
    return _completion(chat, await pipeline.until_end(deps, chat))


def _completion(chat: Exchange, ending: Ending) -> dict[str, Any]:
    if ending.outcome == "failed":
        raise OpenAIError(status.HTTP_500_INTERNAL_SERVER_ERROR, f"generation failed: {ending.detail}")
    blocked = ending.outcome == "blocked"
    message = {
        "role": "assistant",
        "content": None if blocked else ending.text,
        "refusal": ending.detail if blocked else None,
    }
    choice = {"index": 0, "message": message, "finish_reason": _finish_reason(ending), "logprobs": None}
    return _envelope(chat, "chat.completion", choices=[choice], usage=usage(ending.usage))


async def _streamed(deps: Deps, user: str, chat: Exchange, include_usage: bool) -> AsyncIterator[str]:
    ended = False
    try:
        yield _chunk(chat, {"role": "assistant", "content": ""})
        async for item in pipeline.follow(deps, chat):
            if isinstance(item, Delta):
                yield _chunk(chat, {"content": item.text})
                continue
            ended = True
            if item.outcome == "failed":
                yield json.dumps(error_body(500, f"generation failed: {item.detail}"))
                return
            yield _chunk(chat, {}, _finish_reason(item))
            if include_usage:
                yield json.dumps(_envelope(chat, "chat.completion.chunk", choices=[], usage=usage(item.usage)))
            yield "[DONE]"
    finally:
        await pipeline.cancel_unless_ended(deps, user, chat, ended)


def _chunk(chat: Exchange, delta: dict[str, Any], finish_reason: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
    return json.dumps(_envelope(chat, "chat.completion.chunk", choices=[choice]))


def _envelope(chat: Exchange, kind: str, **fields: Any) -> dict[str, Any]:
    return {"id": f"chatcmpl-{chat.response_id}", "object": kind, "created": chat.created, "model": chat.model} | fields


def _finish_reason(ending: Ending) -> str:
    return FINISH_REASONS.get(ending.outcome, ending.finish_reason or "stop")


def usage(counted: Usage | None) -> dict[str, Any]:
    prompt_tokens, completion_tokens = (counted.prompt_tokens, counted.completion_tokens) if counted else (0, 0)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
