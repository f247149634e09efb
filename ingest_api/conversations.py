"""Conversations and their messages: start one, list yours, send a message, read the history."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel, Field, field_validator

from infra.settings import settings
from ingest_api import submission
from ingest_api.auth import User
from ingest_api.services import Deps

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])

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
    conversation_id = await submission.start_conversation(deps, user, body.title if body else "")
    await deps.ownership.check_conversation(conversation_id, user)
    return Created(id=conversation_id)


@router.get("", response_model=list[ConversationOut])
async def list_conversations(user: User, deps: Deps, limit: int = 50) -> list[ConversationOut]:
    rows = await deps.history.conversations(user, min(max(limit, 1), 500))
    return [ConversationOut(id=r.conversation_id, title=r.title, created_at=r.created_at) for r in rows]


@router.post("/{conversation_id}/messages", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
async def send_message(conversation_id: str, body: NewMessage, user: User, deps: Deps) -> Accepted:
    """Accept a message once Kafka has it; the reply streams from /v1/responses/{response_id}/events."""
    submission.check_size(body.content)
    await deps.ownership.check_conversation(conversation_id, user)
    submitted = await submission.submit_message(deps, user, conversation_id, body.content, body.model)
    return Accepted(message_id=submitted.message_id, response_id=submitted.response_id)


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
