"""A message sent again under the same `Idempotency-Key` is the same message, never a second one
(and a conversation created again the same conversation).

When Kafka does not confirm a write in time, the API answers 503 "it may not be stored": the
broker may have written it and lost the answer. A client that sends the message again could then
double it. A client that sends an `Idempotency-Key` header (the IETF httpapi draft's, as Stripe's
API takes it) can send again safely. The first request records, under the key, the ids it minted
for its event: the event id, its time, the message and response ids. A request again under the
key rebuilds that very event from them, the same bytes a producer retry would have sent, and
every consumer of the log already takes an event twice as once (rule 2). So there is at most one
message and one reply, whatever became of the first write.

A key belongs to its caller and to the conversation it was sent to (a new conversation's to its
caller), and is kept a day (`settings.api.idempotency_ttl_s`). The same key with a different
request is refused (422), as the draft asks. A record lost from Redis (flushed, or expired) only
makes a later send a new message, as it is without a key. The OpenAI endpoints take the header
too, for stored requests: a `store=false` one keeps nothing, its key included, and is answered
again.

A regeneration needs no key: the reply it replaces names it. `POST /v1/responses/{id}/regenerate`
sent again (after a 503 or a lost answer, or a double click) is the same regeneration: the first
request records the event it minted under the reply it replaces, before it writes it, and a
request again rebuilds that event (`RegenerationRecords`), kept as long as a key.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, TypeVar

from fastapi import Header, HTTPException, status
from redis.asyncio import Redis

from infra.settings import settings
from schemas.events import ConversationStarted, MessageSubmitted

HEADER = "Idempotency-Key"
FORM = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces: a UUID, a client's own scheme
Recorded = TypeVar("Recorded", MessageSubmitted, ConversationStarted)
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description="Any string of yours for this request (a UUID will do): sending it again under the key, "
        "after a 503 or a lost answer, is answered with the same ids and never doubles it (kept a day)",
    ),
]
"""The header as a route's parameter."""
MINTED: dict[type, set[str]] = {  # what the API mints for each event a key may be sent with
    MessageSubmitted: {"event_id", "occurred_at", "message_id", "response_id"},
    ConversationStarted: {"event_id", "occurred_at", "conversation_id"},
}


class IdempotencyKeys:
    """The records, in Redis (the API's client, created with `decode_responses=True`)."""

    def __init__(self, client: Redis) -> None:
        self._redis = client

    async def earlier(self, key: str, event: Recorded) -> Recorded | None:
        """Record the event's minted ids under the key, in one round trip that also reads what an
        earlier request recorded: None when this is the key's first request, otherwise the earlier
        event rebuilt (the caller writes that one). The same key for another request is a 422."""
        check_form(key)
        minted = event.model_dump(mode="json", include=MINTED[type(event)])
        request = fingerprint(event)
        record = json.dumps({"request": request, "minted": minted})
        ttl_s = settings.api.idempotency_ttl_s
        found: str | None = await self._redis.set(_name(key, event), record, nx=True, get=True, ex=ttl_s)
        if found is None:
            return None
        earlier: dict[str, Any] = json.loads(found)
        if earlier["request"] != request:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                detail=f"the {HEADER} {key!r} was sent with another request: use a new key for each new message",
            )
        return type(event).model_validate(event.model_dump(mode="json") | earlier["minted"])


def _name(key: str, event: MessageSubmitted | ConversationStarted) -> str:
    """A key is its caller's, and a message's its conversation's; a new conversation's are apart,
    so one key may serve a new chat's creation and its first message."""
    scope = event.conversation_id if isinstance(event, MessageSubmitted) else "new-conversation"
    return f"steno:idempotency:{event.user_id}:{scope}:{key}"


def check_form(key: str) -> None:
    if not FORM.fullmatch(key):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"the {HEADER} header must be 1 to 255 printable ASCII characters without spaces (a UUID will do)",
        )


def fingerprint(event: MessageSubmitted | ConversationStarted) -> str:
    """What the client asked for (its message, model, options; a title), without what the API minted."""
    return hashlib.sha256(event.model_dump_json(exclude=MINTED[type(event)]).encode()).hexdigest()


class RegenerationRecords:
    """Each reply's regeneration, in Redis, under the reply it replaces."""

    def __init__(self, client: Redis) -> None:
        self._redis = client

    async def of(self, response_id: str) -> MessageSubmitted | None:
        """The regeneration recorded for the reply, if one was."""
        found: str | None = await self._redis.get(_regeneration_name(response_id))
        return None if found is None else MessageSubmitted.model_validate_json(found)

    async def earlier(self, event: MessageSubmitted) -> MessageSubmitted | None:
        """Record the event as the regeneration of the reply it replaces, in one round trip that
        also reads what an earlier request recorded: None when this is the first, otherwise that
        earlier regeneration (two requests at once: the one that recorded first wins)."""
        if event.replaces is None:
            raise ValueError(f"message {event.message_id} replaces no reply: it is no regeneration")
        name, ttl_s = _regeneration_name(event.replaces), settings.api.idempotency_ttl_s
        found: str | None = await self._redis.set(name, event.model_dump_json(), nx=True, get=True, ex=ttl_s)
        return None if found is None else MessageSubmitted.model_validate_json(found)


def _regeneration_name(response_id: str) -> str:
    return f"steno:regeneration:{response_id}"
