"""OpenAI's Responses API: `POST /v1/responses`, `GET /v1/responses/{id}`, cancel.

`previous_response_id` continues that response's conversation, so the stateful path is steno's
own conversations: context assembly adds the history, as for a chat on the page. `background`
returns at once; the reply is generated anyway (it always is: the pipeline does not depend on
the caller staying). Streams are computed from the log, so `GET ...?stream=true&starting_after=N`
resumes exactly after event N, during the reply or long after it ended.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.convertors import Convertor, register_url_convertor

from infra.settings import settings
from ingest_api import submission
from ingest_api.auth import User
from ingest_api.openai_api import exchange as pipeline
from ingest_api.openai_api import unstored
from ingest_api.openai_api.errors import OpenAIError, OpenAIRoute, invalid
from ingest_api.openai_api.exchange import Exchange
from ingest_api.openai_api.prompt import Turn, prompt, turn
from ingest_api.openai_api.reply import Delta, Ending, reply
from ingest_api.openai_api.response_object import RESPONSE_PREFIX, ResponseMeta, response_object, stream_events
from ingest_api.ownership import ResponseOwner, eventually
from ingest_api.positions import LoggedEvent
from ingest_api.response_stream import backlog
from ingest_api.services import Deps, Services
from projections.history import Message
from projections.status import Status


class OpenAIResponseId(Convertor[str]):
    """`resp_<steno response id>`: keeps these routes apart from the native /v1/responses/{id}/..."""

    regex = RESPONSE_PREFIX + "[0-9a-f-]+"

    def convert(self, value: str) -> str:
        return value.removeprefix(RESPONSE_PREFIX)

    def to_string(self, value: str) -> str:
        return RESPONSE_PREFIX + value


register_url_convertor("openai_response", OpenAIResponseId())
FINAL = {Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.BLOCKED}
router = APIRouter(prefix="/v1/responses", tags=["openai"], route_class=OpenAIRoute, lifespan=unstored.sweeping)


class CreateResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[Any]
    instructions: str | None = None
    previous_response_id: str | None = None
    stream: bool = False
    store: bool = True
    background: bool = False
    max_output_tokens: int | None = Field(default=None, ge=1)


@router.post("", response_model=None)
async def create_response(body: CreateResponse, user: User, deps: Deps) -> dict[str, Any] | EventSourceResponse:
    pipeline.check_model(body.model)
    if not body.store and body.previous_response_id:
        raise invalid("store=false answers once and forgets: it cannot continue a stored conversation", "store")
    request = prompt(_input_turns(body.input), body.instructions, body.max_output_tokens)
    if body.store:
        conversation_id = await _continued_conversation(deps, user, body.previous_response_id)
    else:  # answered once, then deleted, even if this process dies first (see `unstored`)
        pipeline.check_sizes(request)  # before the intent: a refused request leaves nothing anywhere
        conversation_id = await unstored.start_conversation(deps, user, request.title)
    exchange = await pipeline.begin(deps, user, request, body.model, conversation_id)
    if not body.store:
        unstored.forget_once_answered(deps, user, exchange)
    meta = ResponseMeta(exchange.response_id, body.model, body.background, body.previous_response_id, body.instructions)
    if body.stream:
        events = stream_events(meta, pipeline.follow(deps, exchange))
        return _sse(_cancelling_when_abandoned(deps, user, exchange, events, body.background))
    if body.background:
        return response_object(meta, "", None)
    ending = await pipeline.until_end(deps, exchange)
    return response_object(meta, ending.text, ending)


@router.get("/{response_id:openai_response}", response_model=None)
async def retrieve_response(
    response_id: str,
    user: User,
    deps: Deps,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=-1)] = None,
) -> dict[str, Any] | EventSourceResponse:
    owner = await deps.ownership.check_response(response_id, user)
    meta, turn_rows = await _meta(deps, owner, response_id)
    exchange = Exchange(owner.conversation_id, response_id, meta.model)
    if stream:
        after = -1 if starting_after is None else starting_after
        events = stream_events(meta, pipeline.follow(deps, exchange))
        return _sse(event async for event in events if event["sequence_number"] > after)
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
    if ending is None and stored.status in FINAL:
        detail = stored.detail or ""
        text, ending = stored.content, Ending(stored.status, stored.finish_reason or "", detail, None, stored.content)
    return response_object(meta, text, ending)


async def _listed(items: list[LoggedEvent]) -> AsyncIterator[LoggedEvent]:
    """Events already read, in the shape `reply` folds."""
    for item in items:
        yield item


async def _cancelling_when_abandoned(
    deps: Services, user: str, exchange: Exchange, events: AsyncIterator[dict[str, Any]], background: bool
) -> AsyncIterator[dict[str, Any]]:
    """A foreground stream's reply is cancelled when its client leaves; a background one is not."""
    ended = False
    try:
        async for event in events:
            ended = event["type"] in ("response.completed", "response.failed", "response.incomplete")
            yield event
    finally:
        if not background:
            await pipeline.cancel_unless_ended(deps, user, exchange, ended)


def _sse(events: AsyncIterator[dict[str, Any]]) -> EventSourceResponse:
    async def encoded() -> AsyncIterator[ServerSentEvent]:
        async for event in events:
            yield ServerSentEvent(data=json.dumps(event), event=event["type"])

    return EventSourceResponse(encoded(), ping=settings.api.heartbeat_s)
