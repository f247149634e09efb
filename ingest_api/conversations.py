"""Conversations and their messages: start one, list yours, send a message, read the history."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field, field_validator

from infra.settings import settings
from schemas.events import ConversationStarted, MessageSubmitted, new_id
from schemas.topics import CONVERSATIONS

from ingest_api.auth import User
from ingest_api.ownership import ResponseOwner
from ingest_api.services import Deps

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])

INFLIGHT_TTL_S = 600  # a lost terminal event must not lock a conversation for ever
CLAIM_GRACE_S = 1.0  # how long a new message waits for the previous reply's claim to clear


class NewConversation(BaseModel):
    title: str = Field(default="", max_length=200)


class NewMessage(BaseModel):
    content: str
    model: str = "smollm2"

    @field_validator("content")
    @classmethod
    def _not_blank(cls, content: str) -> str:
        if not content.strip():
            raise ValueError("content is empty: send the text of your message")
        return content

    @field_validator("model")
    @classmethod
    def _known_model(cls, model: str) -> str:
        if model not in settings.models:
            raise ValueError(f"unknown model {model!r}: use one of {sorted(settings.models)}")
        return model


class Created(BaseModel):
    id: str


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
    created_at: datetime
    updated_at: datetime


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Created)
async def start_conversation(user: User, deps: Deps, body: NewConversation | None = None) -> Created:
    """Start a conversation; it is listed as soon as this returns.

    Waiting for the projection (it writes both conversation tables in one batch) gives the
    creator read-your-writes on every other endpoint.
    """
    event = ConversationStarted(conversation_id=new_id(), user_id=user, title=(body.title if body else ""))
    await deps.producer.send(CONVERSATIONS, event)
    await deps.ownership.check_conversation(event.conversation_id, user)
    return Created(id=event.conversation_id)


@router.get("", response_model=list[ConversationOut])
async def list_conversations(user: User, deps: Deps, limit: int = 50) -> list[ConversationOut]:
    rows = await deps.history.conversations(user, min(max(limit, 1), 500))
    return [ConversationOut(id=r.conversation_id, title=r.title, created_at=r.created_at) for r in rows]


@router.post("/{conversation_id}/messages", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
async def send_message(conversation_id: str, body: NewMessage, user: User, deps: Deps) -> Accepted:
    """Accept a message once Kafka has it; the reply streams from /v1/responses/{response_id}/events."""
    _check_size(body.content)
    await deps.ownership.check_conversation(conversation_id, user)
    message_id, response_id = new_id(), new_id()
    if not await _claim(deps, conversation_id, response_id):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail="a response is still in progress in this conversation: wait for it to finish or cancel it",
        )
    event = MessageSubmitted(
        conversation_id=conversation_id, user_id=user, message_id=message_id,
        response_id=response_id, content=body.content, model=body.model,
    )
    try:
        await deps.producer.send(CONVERSATIONS, event)
    except Exception as exc:
        await deps.context.release_inflight(conversation_id, response_id)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"the message was not stored, send it again: {exc}"
        ) from exc
    deps.ownership.record_response(response_id, ResponseOwner(conversation_id, user, message_id))
    return Accepted(message_id=message_id, response_id=response_id)


@router.get("/{conversation_id}/messages", response_model=list[MessageOut])
async def history(conversation_id: str, user: User, deps: Deps) -> list[MessageOut]:
    await deps.ownership.check_conversation(conversation_id, user)
    rows = await deps.history.messages(conversation_id)
    return [
        MessageOut(
            id=r.message_id, role=r.role, content=r.content, status=r.status, model=r.model,
            created_at=r.created_at, updated_at=r.updated_at,
        )
        for r in rows
    ]


async def _claim(deps: Deps, conversation_id: str, response_id: str) -> bool:
    """Make this response the conversation's one in progress.

    The projection releases a finished response's claim a moment after its client saw `done`;
    a client that sends its next message at once must not get a 409 for that gap. A holder
    this process saw end is taken over at once; otherwise the claim is retried briefly.
    """
    deadline = time.monotonic() + CLAIM_GRACE_S
    while not await deps.context.claim_inflight(conversation_id, response_id, INFLIGHT_TTL_S):
        holder = await deps.context.inflight(conversation_id)
        if holder and deps.feed.has_ended(holder):
            if await deps.context.take_over_inflight(conversation_id, holder, response_id, INFLIGHT_TTL_S):
                return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _check_size(content: str) -> None:
    size = len(content.encode())
    if size > settings.api.max_message_bytes:
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            detail=f"content is {size} bytes; the limit is {settings.api.max_message_bytes}",
        )
