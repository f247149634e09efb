"""`POST /v1/chat/completions`, streaming or not, through the same pipeline as every message.

The request's messages are the whole context (the API is stateless); the exchange is recorded
as a new conversation of the caller's. A streamed reply is `chat.completion.chunk` objects with
one id and `created`, the finish reason on the last choice chunk, an optional usage chunk and
`[DONE]`; an error after the stream began is sent as `data: {"error": ...}`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from json.encoder import encode_basestring_ascii  # json.dumps of a str, in C
from typing import Any

from fastapi import APIRouter, status
from pydantic import field_validator
from pydantic_core import PydanticCustomError

from infra.settings import settings
from ingest_api.auth import User
from ingest_api.idempotency import IdempotencyKey
from ingest_api.openai_api import exchange as pipeline
from ingest_api.openai_api import unstored
from ingest_api.openai_api.errors import OpenAIError, OpenAIRoute, error_body, invalid
from ingest_api.openai_api.exchange import Exchange
from ingest_api.openai_api.fields import END_USER, NO_CACHE, NO_TOOLS, TO_MODEL, OpenAIRequest, honoured, refused
from ingest_api.openai_api.prompt import prompt, turn
from ingest_api.openai_api.reply import SHUTTING_DOWN, SHUTTING_DOWN_CODE, Delta, Ending
from ingest_api.openai_api.sampling import ResponseFormatParam, chat_format
from ingest_api.services import Deps
from ingest_api.sse import SseResponse, event_data
from schemas.events import SamplingOptions, Usage

router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)

FINISH_REASONS = {"cancelled": "stop", "blocked": "content_filter"}
MAX_STOPS = 4


STOP = (
    "the reply ends before the first of these texts (a string or up to 4): the same text in the stream, the "
    "final object and history, `finish_reason: stop`; carried to the model (vLLM's `stop`)"
)


class StreamOptions(OpenAIRequest):
    include_usage: bool | None = honoured("adds a `choices: []` chunk with the usage before `[DONE]`")
    include_obfuscation: bool | None = refused("steno adds no obfuscation padding to stream events", False)


class ChatCompletionRequest(OpenAIRequest):
    """Every field OpenAI documents for the request, honoured or refused (see `fields`)."""

    model: str = honoured("the model; 404 `model_not_found` unless `GET /v1/models` can list it", ...)
    messages: list[Any] = honoured(
        "the whole context: system/developer messages replace steno's system prompt, earlier user/assistant turns "
        "go before the last message, which must be the user's (text parts only; an assistant's `content` may be null)",
        ...,
        min_length=1,
    )
    stream: bool | None = honoured("`chat.completion.chunk`s, then `[DONE]`; a client that leaves cancels the reply")
    stream_options: StreamOptions | None = honoured("with `stream`")
    max_tokens: int | None = honoured("caps the reply (clamped to the model's own cap)", ge=1)
    max_completion_tokens: int | None = honoured("as `max_tokens`, which it takes precedence over", ge=1)
    n: int | None = honoured("1 (or null): one choice per request; any other number is a 400")
    stop: str | list[str] | None = honoured(STOP)
    temperature: float | None = honoured(TO_MODEL.format("temperature"))
    top_p: float | None = honoured(TO_MODEL.format("top_p"))
    presence_penalty: float | None = honoured(TO_MODEL.format("presence_penalty"))
    frequency_penalty: float | None = honoured(TO_MODEL.format("frequency_penalty"))
    seed: int | None = honoured("passed to the model (vLLM's `seed`); the scripted model is deterministic anyway")
    response_format: ResponseFormatParam | None = honoured("constrains the reply (below)")
    store: bool | None = honoured(
        "true or null: the exchange is a conversation in the caller's history (steno's way); false: it is "
        "deleted from history once answered (a ConversationDeleted event)"
    )
    user: str | None = honoured(END_USER)
    safety_identifier: str | None = honoured(END_USER)
    prompt_cache_key: str | None = honoured(NO_CACHE)
    prompt_cache_retention: str | None = honoured(NO_CACHE)
    prompt_cache_options: dict[str, Any] | None = honoured(NO_CACHE)
    moderation: Any = refused("steno moderates every message by its own settings (`moderation`)")
    service_tier: str | None = refused("steno has one service tier", "auto", "default")
    logprobs: bool | None = refused("steno's models do not return log probabilities", False)
    top_logprobs: int | None = refused("steno's models do not return log probabilities", 0)
    logit_bias: dict[str, Any] | None = refused("steno's models take no logit bias", {})
    tools: list[Any] | None = refused(NO_TOOLS, [])
    tool_choice: Any = refused(NO_TOOLS, "none", "auto")
    parallel_tool_calls: bool | None = honoured("accepted: no tools are called, so none in parallel")
    functions: list[Any] | None = refused(NO_TOOLS, [])
    function_call: Any = refused(NO_TOOLS, "none", "auto")
    metadata: dict[str, Any] | None = refused("steno keeps no metadata with an exchange", {})
    modalities: list[str] | None = refused("steno's models write text only", ["text"])
    audio: Any = refused("steno's models write text only")
    prediction: Any = refused("steno's models take no predicted output")
    reasoning_effort: str | None = refused("steno's models do not reason before answering")
    verbosity: str | None = refused("steno's models take no verbosity setting")
    web_search_options: Any = refused("steno does not search the web")

    @field_validator("stop")
    @classmethod
    def _up_to_four(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > MAX_STOPS:
            raise PydanticCustomError("too_many", "up to {most} stop texts", {"most": MAX_STOPS})
        return stop

    def sampling(self) -> SamplingOptions:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return SamplingOptions(
            stop=stop,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            response_format=chat_format(self.response_format, self.model),
        )


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, user: User, deps: Deps, idempotency_key: IdempotencyKey = None
) -> dict[str, Any] | SseResponse:
    pipeline.check_model(body.model)
    if body.n not in (None, 1):
        raise invalid("steno generates one choice per request: set n to 1", "n")
    pipeline.log_end_user(body.user, body.safety_identifier)
    turns = [turn(message, f"messages.{index}") for index, message in enumerate(body.messages)]
    request = prompt(turns, max_tokens=body.max_completion_tokens or body.max_tokens, sampling=body.sampling())
    if body.store is False:
        chat = await unstored.begin(deps, user, request, body.model)
    else:
        chat = await pipeline.begin(deps, user, request, body.model, idempotency_key=idempotency_key)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return SseResponse(_streamed(deps, user, chat, include_usage), ping_s=settings.api.heartbeat_s)
    return _completion(chat, await pipeline.answered(deps, user, chat))


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


async def _streamed(deps: Deps, user: str, chat: Exchange, include_usage: bool) -> AsyncGenerator[bytes, None]:
    """The reply as chunk events: each burst of tokens that arrives together in one write.

    A stream the API ends before the reply (it is shutting down: a deploy) ends with an error
    event, which OpenAI's SDKs raise as an APIError: a stream that just stopped would read as a
    whole reply cut short. The reply is then cancelled, as for a client that left."""
    ended = False
    deltas = DeltaEncoder(chat)
    try:
        yield _data(_chunk(chat, {"role": "assistant", "content": ""}))
        async for batch in pipeline.follow_batches(deps, chat):
            lines = []
            for item in batch:
                if isinstance(item, Delta):
                    lines.append(deltas.encode(item.text))
                else:
                    ended = True
                    lines.extend(_ending(chat, item, include_usage))
            yield b"".join(lines)
        if not ended:  # the process is shutting down; a chat completion cannot be resumed elsewhere
            yield _data(json.dumps(error_body(503, SHUTTING_DOWN, code=SHUTTING_DOWN_CODE)))
    finally:
        await pipeline.cancel_unless_ended(deps, user, chat, ended)


def _ending(chat: Exchange, ending: Ending, include_usage: bool) -> list[bytes]:
    """The stream's last events: an error, or the finish reason, the usage if asked, `[DONE]`."""
    if ending.outcome == "failed":
        return [_data(json.dumps(error_body(500, f"generation failed: {ending.detail}")))]
    lines = [_data(_chunk(chat, {}, _finish_reason(ending)))]
    if include_usage:
        lines.append(_data(json.dumps(_envelope(chat, "chat.completion.chunk", choices=[], usage=usage(ending.usage)))))
    return [*lines, _data("[DONE]")]


def _data(text: str) -> bytes:
    return event_data(text.encode())


class DeltaEncoder:
    """A stream's text chunks, encoded by filling the text into the chunk's JSON: the same bytes
    as `json.dumps` of the whole chunk, which is built and encoded for every token otherwise."""

    _MARK = "\x00"

    def __init__(self, chat: Exchange) -> None:
        before, after = _chunk(chat, {"content": self._MARK}).split(json.dumps(self._MARK))
        self._before, self._after = before.encode(), after.encode()

    def encode(self, text: str) -> bytes:
        return event_data(self._before + encode_basestring_ascii(text).encode() + self._after)


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
