"""Conversations and their messages: start, list, rename and delete yours, send a message, read
the history."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from infra.settings import settings
from ingest_api import responses, submission
from ingest_api.auth import User
from ingest_api.idempotency import IdempotencyKey
from ingest_api.ownership import POLL_S, PROJECTION_WAIT_S
from ingest_api.services import Deps
from ingest_api.sse import SseResponse, accepts_event_stream

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])


class Body(BaseModel):
    """A request body: a field steno does not know is refused (422) rather than silently dropped."""

    model_config = ConfigDict(extra="forbid")


class NewConversation(Body):
    title: str = Field(default="", max_length=200)


class Rename(Body):
    title: str = Field(max_length=200)

    @field_validator("title")
    @classmethod
    def _not_blank(cls, title: str) -> str:
        if not title.strip():
            raise ValueError("title is empty: give the conversation a name")
        return title.strip()


def _known_model(model: str) -> str:
    if model not in settings.models:
        raise ValueError(f"unknown model {model!r}: use one of {sorted(settings.models)}")
    return model


ModelName = Annotated[str, AfterValidator(_known_model)]


class NewMessage(Body):
    content: str
    model: ModelName = "smollm2"

    @field_validator("content")
    @classmethod
    def _not_blank(cls, content: str) -> str:
        if not content.strip():
            raise ValueError("content is empty: send the text of your message")
        return content


class Created(BaseModel):
    id: str


class Renamed(BaseModel):
    id: str
    title: str


class Accepted(BaseModel):
    message_id: str
    response_id: str


class ConversationOut(BaseModel):
    id: str
    title: str
    created_at: datetime


class MessageOut(BaseModel):
    id: str
    role: str
    content: str
    status: str
    model: str | None
    reply_to: str | None  # on a reply: the id of the message it answers
    detail: str | None  # why a reply failed, or the categories a message was blocked for
    created_at: datetime
    updated_at: datetime


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Created)
async def start_conversation(
    user: User, deps: Deps, body: NewConversation | None = None, idempotency_key: IdempotencyKey = None
) -> Created:
    """Start a conversation; it is listed as soon as this returns (unless the projection is more
    than a few seconds behind: then a moment later).

    Waiting for the projection (it writes both conversation tables in one batch) gives the
    creator read-your-writes on every other endpoint (`Ownership.created`).
    """
    title = body.title if body else ""
    started = await submission.start_conversation(deps, user, title, idempotency_key=idempotency_key)
    await deps.ownership.created(started.conversation_id, user, started.partition, started.offset)
    return Created(id=started.conversation_id)


@router.get("", response_model=list[ConversationOut])
async def list_conversations(user: User, deps: Deps, limit: int = 50) -> list[ConversationOut]:
    rows = await deps.history.conversations(user, min(max(limit, 1), 500))
    return [ConversationOut(id=r.conversation_id, title=r.title, created_at=r.created_at) for r in rows]


@router.patch("/{conversation_id}", response_model=Renamed)
async def rename_conversation(conversation_id: str, body: Rename, user: User, deps: Deps) -> Renamed:
    """Rename the conversation once Kafka has the new title; the listing shows it a moment later,
    when the projection has applied it."""
    await deps.ownership.check_conversation(conversation_id, user)
    await submission.rename_conversation(deps, user, conversation_id, body.title)
    return Renamed(id=conversation_id, title=body.title)


@router.delete("/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_conversation(conversation_id: str, user: User, deps: Deps) -> Response:
    """Delete the conversation and stop its reply in progress; from then on every endpoint answers
    404 for it and its responses, and no replay of the log brings it back."""
    await deps.ownership.check_conversation(conversation_id, user)
    await submission.delete_conversation(deps, user, conversation_id)
    await _until_deleted(deps, conversation_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


STREAMED_REPLY: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "With `Accept: text/event-stream`: the reply itself, as an event stream: `accepted` "
        '`{"message_id", "response_id"}`, then the events of GET /v1/responses/{response_id}/events',
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


@router.post(
    "/{conversation_id}/messages",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses=STREAMED_REPLY,
)
async def send_message(
    conversation_id: str,
    body: NewMessage,
    user: User,
    deps: Deps,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Accepted | SseResponse:
    """Accept a message once Kafka has it; the reply streams from /v1/responses/{response_id}/events,
    or in this response when the client asks for `text/event-stream`."""
    submission.check_size(body.content)
    await deps.ownership.check_conversation(conversation_id, user, marker_checked_later=True)  # by the claim
    submitted = await submission.submit_message(
        deps, user, conversation_id, body.content, body.model, idempotency_key=idempotency_key
    )
    if accepts_event_stream(request.headers.get("accept", "")):
        return responses.live_reply(deps, conversation_id, submitted)
    return Accepted(message_id=submitted.message_id, response_id=submitted.response_id)


@router.get("/{conversation_id}/messages", response_model=list[MessageOut])
async def history(conversation_id: str, user: User, deps: Deps) -> list[MessageOut]:
    await deps.ownership.check_conversation(conversation_id, user)
    rows = await deps.history.messages(conversation_id)
    return [
        MessageOut(
            id=r.message_id,
            role=r.role,
            content=r.content,
            status=r.status,
            model=r.model,
            reply_to=r.reply_to,
            detail=r.detail,
            created_at=r.created_at,
            updated_at=r.updated_at,
        )
        for r in rows
    ]


async def _until_deleted(deps: Deps, conversation_id: str) -> None:
    """Wait, briefly, until the history view has applied the deletion, so that the caller's next
    listing no longer shows the conversation (it is in the log and will be applied either way)."""
    deadline = time.monotonic() + PROJECTION_WAIT_S
    while await deps.history.conversation_owner(conversation_id) is not None and time.monotonic() < deadline:  # noqa: ASYNC110  (another process applies it)
        await asyncio.sleep(POLL_S)
