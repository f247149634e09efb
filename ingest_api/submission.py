"""The one way into the pipeline: start, rename or delete a conversation, submit a user's message
or regenerate its reply, cancel a reply.

The native API and the OpenAI-compatible API both come through here, so every message gets the
same size check, the same one-reply-at-a-time claim and the same durable write before a client
hears "accepted".
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from confluent_kafka import KafkaException, Message
from fastapi import HTTPException, status

from infra.kafka_clients import position
from infra.settings import settings
from ingest_api import store_outage
from ingest_api.claims import Refused
from ingest_api.ownership import ResponseOwner, deleted_key
from ingest_api.services import Services
from projections.status import ENDED, Status
from schemas.events import (
    ConversationDeleted,
    ConversationRenamed,
    ConversationStarted,
    Event,
    GenerationCancelRequested,
    MessageSubmitted,
    PromptOptions,
    new_id,
)
from schemas.topics import CONTROL, CONVERSATIONS, Topic

INFLIGHT_TTL_S = 600  # a lost terminal event must not lock a conversation for ever
CLAIM_GRACE_S = 1.0  # how long a new message waits for the previous reply's claim to clear


@dataclass(frozen=True)
class Submitted:
    message_id: str
    response_id: str


@dataclass(frozen=True)
class Started:
    """A conversation Kafka has, and where its start is in the conversation log."""

    conversation_id: str
    partition: int
    offset: int


async def start_conversation(
    deps: Services, user: str, title: str, conversation_id: str | None = None, idempotency_key: str | None = None
) -> Started:
    """Write ConversationStarted (under a new id unless given one); it is listed (and its owner
    known) once the projection has it. Under a key an earlier request used, that request's event
    is written again: the same conversation, which the projection takes as a redelivery."""
    event = ConversationStarted(conversation_id=conversation_id or new_id(), user_id=user, title=title)
    if idempotency_key is not None:
        event = await deps.idempotency.earlier(idempotency_key, event) or event
    written, _ = await asyncio.gather(
        _write(deps, CONVERSATIONS, event), deps.ownership.record_start(event.conversation_id, user)
    )
    partition, offset = position(written)
    return Started(event.conversation_id, partition, offset)


async def submit_message(
    deps: Services,
    user: str,
    conversation_id: str,
    content: str,
    model: str,
    options: PromptOptions = PromptOptions(),
    idempotency_key: str | None = None,
) -> Submitted:
    """Accept a message once Kafka has it (the caller has checked ownership); under a key an
    earlier request used, the message that request sent (`ingest_api.idempotency`)."""
    check_size(content)
    event = MessageSubmitted(
        conversation_id=conversation_id,
        user_id=user,
        message_id=new_id(),
        response_id=new_id(),
        content=content,
        model=model,
        options=options,
    )
    earlier = None if idempotency_key is None else await deps.idempotency.earlier(idempotency_key, event)
    return await (_submit(deps, event) if earlier is None else _submit_again(deps, earlier))


async def submit_regeneration(
    deps: Services, user: str, conversation_id: str, message_id: str, content: str, model: str, replaces: str
) -> Submitted:
    """Submit a message the conversation already holds again, for a new reply replacing `replaces`.

    It goes through the whole pipeline like any message (moderation, context, generation), so the
    new reply is built exactly as the first was; the caller has checked that `replaces` is the
    conversation's last reply. Should another request have regenerated it first (two at once), that
    regeneration is the one sent (`ingest_api.idempotency`).
    """
    event = MessageSubmitted(
        conversation_id=conversation_id,
        user_id=user,
        message_id=message_id,
        response_id=new_id(),
        content=content,
        model=model,
        replaces=replaces,
    )
    earlier = await deps.regenerations.earlier(event)
    return await (_submit(deps, event) if earlier is None else _submit_again(deps, earlier))


async def submit_regeneration_again(deps: Services, earlier: MessageSubmitted) -> Submitted:
    """Send again a regeneration an earlier request recorded (`ingest_api.idempotency`)."""
    return await _submit_again(deps, earlier)


async def _submit(deps: Services, event: MessageSubmitted) -> Submitted:
    """Claim the conversation for the event's reply, then write the event."""
    await _claim_for(deps, event)
    await _write_claimed(deps, event)
    return _submitted(deps, event)


async def _submit_again(deps: Services, event: MessageSubmitted) -> Submitted:
    """Send again the message an earlier request sent, or tried to: under the same idempotency
    key, or the same reply's regeneration.

    Once history holds it, it is in the log: nothing is written. Otherwise it is written again,
    under its claim (its own response's, which an earlier request of it may still hold): a first
    write that did land makes this one a duplicate, which every consumer absorbs. History is read
    again once claimed: a reply that ended in between released its claim before this one was
    taken, and this one, which no terminal event will release now, is released here.
    """
    if await _reply_status(deps, event) is None:
        await _claim_for(deps, event)
        reply = await _reply_status(deps, event)
        if reply is None:
            await _write_claimed(deps, event)
        elif reply in ENDED or reply is Status.REPLACED:
            await deps.claims.release(event.conversation_id, event.response_id)
    return _submitted(deps, event)


async def _claim_for(deps: Services, event: MessageSubmitted) -> None:
    if not await _claim(deps, event.conversation_id, event.response_id):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail="a response is still in progress in this conversation: wait for it to finish or cancel it",
        )


async def _write_claimed(deps: Services, event: MessageSubmitted) -> None:
    """Write the event, its response's owner recorded meanwhile (`Ownership`); release the claim
    should Kafka not have it."""
    recorded = deps.ownership.record_submission(event.response_id, _owner(event))
    try:
        await asyncio.gather(_write(deps, CONVERSATIONS, event), recorded)
    except Exception:  # not a cancellation: a request cancelled mid-send may have written its message
        await deps.claims.release(event.conversation_id, event.response_id)
        raise


async def _reply_status(deps: Services, event: MessageSubmitted) -> Status | None:
    """Where history has the message's reply: None while it does not hold the message itself, or
    for a regeneration, while it still shows the reply regenerated; a reply no longer shown
    (regenerated since) counts as ended."""
    turns = {turn.message_id: turn.status for turn in await deps.history.messages(event.conversation_id)}
    if event.message_id not in turns or (event.response_id not in turns and event.replaces in turns):
        return None
    return turns.get(event.response_id, Status.REPLACED)


def _submitted(deps: Services, event: MessageSubmitted) -> Submitted:
    deps.ownership.record_response(event.response_id, _owner(event))
    return Submitted(message_id=event.message_id, response_id=event.response_id)


def _owner(event: MessageSubmitted) -> ResponseOwner:
    return ResponseOwner(event.conversation_id, event.user_id, event.message_id)


async def rename_conversation(deps: Services, user: str, conversation_id: str, title: str) -> None:
    await _write(deps, CONVERSATIONS, ConversationRenamed(conversation_id=conversation_id, user_id=user, title=title))


async def delete_conversation(deps: Services, user: str, conversation_id: str) -> None:
    """Write ConversationDeleted and stop the reply in progress, if any; every API process forgets
    the conversation at once (see `Ownership`), the views once the projection applies the deletion."""
    generating = await deps.claims.holder(conversation_id)
    await _write(deps, CONVERSATIONS, ConversationDeleted(conversation_id=conversation_id, user_id=user))
    await deps.ownership.forget_conversation(conversation_id)
    if generating is not None:
        await request_cancel(deps, user, conversation_id, generating)


async def request_cancel(deps: Services, user: str, conversation_id: str, response_id: str) -> None:
    """Ask the bridge to stop; the partial text stays in history as a cancelled response."""
    event = GenerationCancelRequested(conversation_id=conversation_id, user_id=user, response_id=response_id)
    await _write(deps, CONTROL, event)


async def _write(deps: Services, topic: Topic, event: Event) -> Message:
    """Write the event once Kafka has it. Kafka not taking it (down past the producer's delivery
    timeout, its queue full) is the server's passing trouble, not the request's: a 503 with
    `Retry-After` that says so, never a bare 500. Whether a send that timed out was stored is not
    known (the broker may have written it and lost the answer), and the answer says that too."""
    try:
        return await deps.producer.send(topic, event)
    except (KafkaException, BufferError) as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"Kafka did not confirm the write ({exc}): it may not be stored; send the request again shortly",
            headers={"Retry-After": str(store_outage.RETRY_AFTER_S)},
        ) from exc


def check_size(content: str) -> None:
    size = len(content.encode())
    if size > settings.api.max_message_bytes:
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            detail=f"content is {size} bytes; the limit is {settings.api.max_message_bytes}",
        )


async def _claim(deps: Services, conversation_id: str, response_id: str) -> bool:
    """Make this response the conversation's one in progress, unless the conversation has been
    deleted (its marker is asked for in the claim's own round trip: 404).

    The projection releases a finished response's claim a moment after its client saw `done`;
    a client that sends its next message at once must not get a 409 for that gap. A holder
    this process saw end is taken over at once (in the claim's own round trip when it is the
    conversation's last response to end); otherwise the claim is retried briefly.
    """
    deadline = time.monotonic() + CLAIM_GRACE_S
    while (
        holder := await deps.claims.claim_or_holder(
            conversation_id,
            response_id,
            INFLIGHT_TTL_S,
            finished=deps.feed.last_ended(conversation_id),
            unless_exists=deleted_key(conversation_id),
        )
    ) is not None:
        if holder is Refused.REFUSED:
            raise deps.ownership.refuse_deleted(conversation_id)
        if deps.feed.has_ended(holder) and await deps.claims.take_over(
            conversation_id, holder, response_id, INFLIGHT_TTL_S
        ):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
