"""OpenAI's Responses API: `POST /v1/responses`, `GET /v1/responses/{id}`, cancel.

`previous_response_id` continues that response's conversation, so the stateful path is steno's
own conversations: context assembly adds the history, as for a chat on the page. `background`
returns at once; the reply is generated anyway (it always is: the pipeline does not depend on
the caller staying). Streams are computed from the log, so `GET ...?stream=true&starting_after=N`
resumes exactly after event N, during the reply or long after it ended.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from starlette.convertors import Convertor, register_url_convertor

from infra.settings import settings
from ingest_api import submission
from ingest_api.auth import User
from ingest_api.idempotency import IdempotencyKey
from ingest_api.openai_api import exchange as pipeline
from ingest_api.openai_api import unstored
from ingest_api.openai_api.errors import OpenAIError, OpenAIRoute, invalid
from ingest_api.openai_api.exchange import Exchange
from ingest_api.openai_api.fields import END_USER, NO_CACHE, NO_TOOLS, TO_MODEL, OpenAIRequest, honoured, refused
from ingest_api.openai_api.prompt import Turn, prompt, turn
from ingest_api.openai_api.reply import Delta, Ending, reply
from ingest_api.openai_api.response_object import (
    ENDING_TYPES,
    RESPONSE_PREFIX,
    ResponseMeta,
    response_object,
    stream_events,
)
from ingest_api.openai_api.sampling import TextFormatParam, text_format
from ingest_api.ownership import ResponseOwner, eventually
from ingest_api.positions import LoggedEvent
from ingest_api.response_stream import backlog
from ingest_api.services import Deps, Services
from ingest_api.sse import SseResponse, event_bytes
from projections.history import Message
from projections.status import ENDED
from schemas.events import SamplingOptions


class OpenAIResponseId(Convertor[str]):
    """`resp_<steno response id>`: keeps these routes apart from the native /v1/responses/{id}/..."""

    regex = RESPONSE_PREFIX + "[0-9a-f-]+"

    def convert(self, value: str) -> str:
        return value.removeprefix(RESPONSE_PREFIX)

    def to_string(self, value: str) -> str:
        return RESPONSE_PREFIX + value


register_url_convertor("openai_response", OpenAIResponseId())
Events = list[dict[str, Any]]  # stream events sent together
router = APIRouter(prefix="/v1/responses", tags=["openai"], route_class=OpenAIRoute, lifespan=unstored.sweeping)


class TextParam(OpenAIRequest):
    format: TextFormatParam | None = honoured("constrains the reply, as chat completions' `response_format`")
    verbosity: str | None = refused("steno's models take no verbosity setting", "medium")


class StreamOptionsParam(OpenAIRequest):
    include_obfuscation: bool | None = refused("steno adds no obfuscation padding to stream events", False)


class CreateResponse(OpenAIRequest):
    """Every field OpenAI documents for the request, honoured or refused (see `fields`)."""

    model: str = honoured("the model; 404 `model_not_found` unless `GET /v1/models` can list it", ...)
    input: str | list[Any] = honoured("text, or messages (text parts only) of which the last is the user's", ...)
    instructions: str | None = honoured("replace steno's system prompt")
    previous_response_id: str | None = honoured("continues that response's conversation: steno adds its history")
    stream: bool | None = honoured("Responses stream events with `sequence_number`")
    stream_options: StreamOptionsParam | None = honoured("with `stream`")
    store: bool | None = honoured(
        "true or null: kept in history; false: the exchange is deleted from history once answered"
    )
    background: bool | None = honoured("returns at once, in progress; the reply is generated anyway")
    max_output_tokens: int | None = honoured("caps the reply (clamped to the model's own cap)", ge=1)
    temperature: float | None = honoured(TO_MODEL.format("temperature"))
    top_p: float | None = honoured(TO_MODEL.format("top_p"))
    text: TextParam | None = honoured("the reply's format (below)")
    user: str | None = honoured(END_USER)
    safety_identifier: str | None = honoured(END_USER)
    prompt_cache_key: str | None = honoured(NO_CACHE)
    prompt_cache_retention: str | None = honoured(NO_CACHE)
    prompt_cache_options: dict[str, Any] | None = honoured(NO_CACHE)
    moderation: Any = refused("steno moderates every message by its own settings (`moderation`)")
    context_management: Any = refused("steno fits the context to the model's window itself (see truncation)")
    truncation: str | None = honoured(
        "`auto` or null: steno fits the context to the model's window by dropping its oldest turns; `disabled` "
        "is a 400",
    )
    service_tier: str | None = refused("steno has one service tier", "auto", "default")
    tools: list[Any] | None = refused(NO_TOOLS, [])
    tool_choice: Any = refused(NO_TOOLS, "none", "auto")
    parallel_tool_calls: bool | None = honoured("accepted: no tools are called, so none in parallel")
    max_tool_calls: int | None = refused(NO_TOOLS)
    include: list[str] | None = refused("steno's responses have no optional parts to include", [])
    metadata: dict[str, Any] | None = refused("steno keeps no metadata with a response", {})
    reasoning: Any = refused("steno's models do not reason before answering")
    top_logprobs: int | None = refused("steno's models do not return log probabilities", 0)
    prompt: Any = refused("steno keeps no prompt templates")
    conversation: Any = refused("use previous_response_id: steno's conversations are not OpenAI conversation objects")

    def sampling(self) -> SamplingOptions:
        format_ = self.text.format if self.text else None
        return SamplingOptions(
            temperature=self.temperature, top_p=self.top_p, response_format=text_format(format_, self.model)
        )


@router.post("", response_model=None)
async def create_response(
    body: CreateResponse, user: User, deps: Deps, idempotency_key: IdempotencyKey = None
) -> dict[str, Any] | SseResponse:
    pipeline.check_model(body.model)
    if body.store is False and body.previous_response_id:
        raise invalid("store=false answers once and forgets: it cannot continue a stored conversation", "store")
    if body.truncation not in (None, "auto"):
        raise invalid("steno always fits the context to the model's window (truncation: auto)", "truncation")
    pipeline.log_end_user(body.user, body.safety_identifier)
    request = prompt(_input_turns(body.input), body.instructions, body.max_output_tokens, body.sampling())
    if body.store is False:  # answered once, then deleted, even if this process dies first (see `unstored`)
        exchange = await unstored.begin(deps, user, request, body.model)
    else:
        conversation_id = await _continued_conversation(deps, user, body.previous_response_id)
        exchange = await pipeline.begin(deps, user, request, body.model, conversation_id, idempotency_key)
    meta = ResponseMeta(
        exchange.response_id, body.model, bool(body.background), body.previous_response_id, body.instructions
    )
    if body.stream:
        events = stream_events(meta, pipeline.follow_batches(deps, exchange))
        return _sse(_cancelling_when_abandoned(deps, user, exchange, events, bool(body.background)))
    if body.background:
        return response_object(meta, "", None)
    ending = await pipeline.answered(deps, user, exchange)
    return response_object(meta, ending.text, ending)


@router.get("/{response_id:openai_response}", response_model=None)
async def retrieve_response(
    response_id: str,
    user: User,
    deps: Deps,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=-1)] = None,
) -> dict[str, Any] | SseResponse:
    owner = await deps.ownership.check_response(response_id, user)
    meta, turn_rows = await _meta(deps, owner, response_id)
    exchange = Exchange(owner.conversation_id, response_id, meta.model)
    if stream:
        after = -1 if starting_after is None else starting_after
        events = stream_events(meta, pipeline.follow_batches(deps, exchange))
        return _sse(_after(events, after))
    return await _current(deps, meta, exchange, turn_rows)


@router.post("/{response_id:openai_response}/cancel")
async def cancel_response(response_id: str, user: User, deps: Deps) -> dict[str, Any]:
    """Stop the reply and return it as cancelled; a reply that already ended is returned as it is."""
    owner = await deps.ownership.check_response(response_id, user)
    meta, _ = await _meta(deps, owner, response_id)
    exchange = Exchange(owner.conversation_id, response_id, meta.model)
    if not deps.feed.has_ended(response_id):
        await submission.request_cancel(deps, user, owner.conversation_id, response_id)
    ending = await pipeline.until_end(deps, exchange)
    return response_object(meta, ending.text, ending)


@router.delete("/{response_id:openai_response}")
async def delete_response(response_id: str, user: User, deps: Deps) -> dict[str, Any]:
    """Delete the response with the conversation it belongs to (a ConversationDeleted event, honoured
    by every view and replay): a response continued with `previous_response_id` shares its
    conversation, so the whole chain goes; a reply in progress is stopped."""
    owner = await deps.ownership.check_response(response_id, user)
    await submission.delete_conversation(deps, user, owner.conversation_id)
    return {"id": RESPONSE_PREFIX + response_id, "object": "response", "deleted": True}


@router.get("/{response_id:openai_response}/input_items")
async def list_input_items(response_id: str, user: User, deps: Deps) -> dict[str, Any]:
    """The response's input as history keeps it: the user's message (instructions and the turns a
    stateless request sent before it are part of its prompt, not of history)."""
    owner = await deps.ownership.check_response(response_id, user)
    turn_rows = await _turn(deps, owner.conversation_id, owner.message_id)
    items = [_input_item(row) for row in turn_rows if row.message_id == owner.message_id]
    first, last = (items[0]["id"], items[-1]["id"]) if items else (None, None)
    return {"object": "list", "data": items, "first_id": first, "last_id": last, "has_more": False}


def _input_item(row: Message) -> dict[str, Any]:
    content = [{"type": "input_text", "text": row.content}]
    return {"id": f"msg_{row.message_id}", "type": "message", "role": "user", "status": "completed", "content": content}


def _input_turns(items: str | list[Any]) -> list[Turn]:
    if isinstance(items, str):
        return [Turn("user", items)]
    return [turn(item, f"input.{index}") for index, item in enumerate(items)]


async def _continued_conversation(deps: Services, user: str, previous: str | None) -> str | None:
    if previous is None:
        return None
    if not previous.startswith(RESPONSE_PREFIX):
        raise invalid(f"previous_response_id {previous!r} is not a response id (resp_...)", "previous_response_id")
    owner = await deps.ownership.check_response(previous.removeprefix(RESPONSE_PREFIX), user)
    return owner.conversation_id


async def _turn(deps: Services, conversation_id: str, message_id: str) -> list[Message]:
    """The user's message and its reply in the history view, once it has them (bounded wait)."""

    async def lookup(key: str) -> list[Message] | None:
        rows = [r for r in await deps.history.messages(conversation_id) if key in (r.message_id, r.reply_to)]
        return rows or None

    rows = await eventually(lookup, message_id)
    if rows is None:
        raise OpenAIError(status.HTTP_404_NOT_FOUND, f"no message {message_id!r} in history yet: try again")
    return rows


async def _meta(deps: Services, owner: ResponseOwner, response_id: str) -> tuple[ResponseMeta, list[Message]]:
    turn_rows = await _turn(deps, owner.conversation_id, owner.message_id)
    return ResponseMeta(response_id, turn_rows[0].model), turn_rows


async def _current(deps: Services, meta: ResponseMeta, exchange: Exchange, turn_rows: list[Message]) -> dict[str, Any]:
    """The response now, from its events so far (feed memory or log), else from history once the
    token stream's retention has passed; never waits for the reply."""
    text, ending = "", None
    async for item in reply(_listed(await backlog(deps.feed, exchange.conversation_id, exchange.response_id))):
        if isinstance(item, Delta):
            text += item.text
        else:
            text, ending = item.text, item
    stored = next(row for row in turn_rows if row.message_id == exchange.response_id)
    if ending is None and stored.status in ENDED:
        detail = stored.detail or ""
        text, ending = stored.content, Ending(stored.status, stored.finish_reason or "", detail, None, stored.content)
    return response_object(meta, text, ending)


async def _listed(items: list[LoggedEvent]) -> AsyncIterator[LoggedEvent]:
    """Events already read, in the shape `reply` folds."""
    for item in items:
        yield item


async def _cancelling_when_abandoned(
    deps: Services, user: str, exchange: Exchange, batches: AsyncIterator[Events], background: bool
) -> AsyncGenerator[Events, None]:
    """A foreground stream's reply is cancelled when its client leaves; a background one is not."""
    ended = False
    try:
        async for batch in batches:
            ended = any(event["type"] in ENDING_TYPES for event in batch)
            yield batch
    finally:
        if not background:
            await pipeline.cancel_unless_ended(deps, user, exchange, ended)


async def _after(batches: AsyncIterator[Events], after: int) -> AsyncGenerator[Events, None]:
    """The events numbered past `after` (a client resuming a stream)."""
    async for batch in batches:
        if later := [event for event in batch if event["sequence_number"] > after]:
            yield later


def _sse(batches: AsyncGenerator[Events, None]) -> SseResponse:
    """Each batch of events as one chunk."""

    async def encoded() -> AsyncGenerator[bytes, None]:
        async with aclosing(batches):
            async for batch in batches:
                yield b"".join(event_bytes(event["type"], json.dumps(event)) for event in batch)

    return SseResponse(encoded(), ping_s=settings.api.heartbeat_s)
