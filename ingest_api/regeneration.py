"""Regenerate a conversation's last reply: its message answered anew, through the whole pipeline.

Design rule 6 stays true: the new reply replaces the old one (`MessageSubmitted.replaces`), so the
message still has exactly one reply in history, and context assembly builds the new prompt from
the turns before the message, as it did the first time (the old reply comes after it).

Asked again for the same reply (a resend after a 503 or a lost answer, a double click), it is the
same regeneration, never a second one: the first request's is recorded under the reply it
replaces (`ingest_api.idempotency.RegenerationRecords`), and answered again, written again only
if history does not have it, whatever the reply's place in the conversation by then.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel

from ingest_api import submission
from ingest_api.auth import User
from ingest_api.conversations import Accepted, ModelName
from ingest_api.ownership import POLL_S, PROJECTION_WAIT_S
from ingest_api.services import Deps
from projections.history import Message
from projections.status import Status
from schemas.events import MessageSubmitted

router = APIRouter(prefix="/v1/responses", tags=["responses"])
STILL_GENERATING = "the reply is still being generated: stop it or wait for it to end, then regenerate"


class Regenerate(BaseModel):
    model: ModelName | None = None  # the reply's own model when not given


@router.post("/{response_id}/regenerate", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
async def regenerate(response_id: str, user: User, deps: Deps, body: Regenerate | None = None) -> Accepted:
    """Answer the message of this reply again; the new reply streams from its own events URL and
    takes the old one's place in history. Only the conversation's last reply, once it has ended;
    asked again for a reply already regenerated, the same new reply (sent again if it was lost)."""
    owner = await deps.ownership.check_response(response_id, user)
    earlier = await deps.regenerations.of(response_id)
    if earlier is not None:
        submitted = await submission.submit_regeneration_again(deps, _same_model(earlier, body))
        return Accepted(message_id=submitted.message_id, response_id=submitted.response_id)
    if await _generating(deps, owner.conversation_id, response_id):
        raise _conflict(STILL_GENERATING)
    turns = await _settled_turns(deps, owner.conversation_id, response_id)
    reply = _regenerable(turns, response_id)
    [question] = [turn for turn in turns if turn.message_id == reply.reply_to]
    submitted = await submission.submit_regeneration(
        deps,
        user,
        owner.conversation_id,
        question.message_id,
        question.content,
        model=(body.model if body and body.model else reply.model),
        replaces=response_id,
    )
    return Accepted(message_id=submitted.message_id, response_id=submitted.response_id)


async def _settled_turns(deps: Deps, conversation_id: str, response_id: str) -> list[Message]:
    """The conversation's history; once it shows the reply ended, if this process saw it end (the
    projection applies the ending a moment after a client sees `done`)."""
    deadline = time.monotonic() + PROJECTION_WAIT_S
    while True:
        turns = await deps.history.messages(conversation_id)
        pending = any(t.message_id == response_id and t.status == Status.PENDING for t in turns)
        if not (pending and deps.feed.has_ended(response_id)) or time.monotonic() > deadline:
            return turns
        await asyncio.sleep(POLL_S)


async def _generating(deps: Deps, conversation_id: str, response_id: str) -> bool:
    """The reply holds its conversation's claim and has not ended: it is being generated, even
    if the history view has not caught up with the message yet."""
    return await deps.claims.holder(conversation_id) == response_id and not deps.feed.has_ended(response_id)


def _regenerable(turns: list[Message], response_id: str) -> Message:
    """The reply, if a new one may replace it; else a 409 that says why not."""
    if not turns or turns[-1].message_id != response_id:
        raise _conflict("only the last reply of a conversation can be regenerated")
    reply = turns[-1]
    if reply.status == Status.PENDING:
        raise _conflict(STILL_GENERATING)
    if reply.status == Status.BLOCKED:
        raise _conflict("the message was blocked by moderation, so it gets no reply: send another message")
    return reply


def _same_model(earlier: MessageSubmitted, body: Regenerate | None) -> MessageSubmitted:
    """The earlier regeneration, unless this request asks for another model: a 409 that names the
    reply to regenerate instead."""
    if body and body.model and body.model != earlier.model:
        raise _conflict(
            f"this reply was already regenerated, with model {earlier.model!r}: "
            f"to try {body.model!r}, regenerate its new reply {earlier.response_id!r}"
        )
    return earlier


def _conflict(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=detail)
