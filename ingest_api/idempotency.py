"""A message sent again under the same `Idempotency-Key` is the same message, never a second one.

When Kafka does not confirm a write in time, the API answers 503 "it may not be stored": the
broker may have written it and lost the answer. A client that sends the message again could then
double it. A client that sends an `Idempotency-Key` header (the IETF httpapi draft's, as Stripe's
API takes it) can send again safely. The first request records, under the key, the ids it minted
for its event: the event id, its time, the message and response ids. A request again under the
key rebuilds that very event from them, the same bytes a producer retry would have sent, and
every consumer of the log already takes an event twice as once (rule 2). So there is at most one
message and one reply, whatever became of the first write.

A key belongs to its caller and to the conversation it was sent to, and is kept a day
(`settings.api.idempotency_ttl_s`). The same key with a different request is refused (422), as
the draft asks. A record lost from Redis (flushed, or expired) only makes a later send a new
message, as it is without a key.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from fastapi import HTTPException, status
from redis.asyncio import Redis

from infra.settings import settings
from schemas.events import MessageSubmitted

HEADER = "Idempotency-Key"
KEY = "steno:idempotency:{user}:{conversation_id}:{key}"
FORM = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces: a UUID, a client's own scheme
IDENTITY = {"event_id", "occurred_at", "message_id", "response_id"}  # what the API mints for a message


class IdempotencyKeys:
    """The records, in Redis (the API's client, created with `decode_responses=True`)."""

    def __init__(self, client: Redis) -> None:
        self._redis = client

    async def earlier(self, key: str, event: MessageSubmitted) -> MessageSubmitted | None:
        """Record the event's ids under the key, in one round trip that also reads what an earlier
        request recorded: None when this is the key's first request, otherwise the earlier event
        rebuilt (the caller sends that one again). The same key for another message is a 422."""
        check_form(key)
        identity = event.model_dump(mode="json", include=IDENTITY)
        record = json.dumps({"request": fingerprint(event), "identity": identity})
        name = KEY.format(user=event.user_id, conversation_id=event.conversation_id, key=key)
        found: str | None = await self._redis.set(name, record, nx=True, get=True, ex=settings.api.idempotency_ttl_s)
        if found is None:
            return None
        earlier: dict[str, Any] = json.loads(found)
        if earlier["request"] != fingerprint(event):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                detail=f"the {HEADER} {key!r} was sent with another message in this conversation: "
                "use a new key for a new message",
            )
        return MessageSubmitted.model_validate(event.model_dump(mode="json") | earlier["identity"])


def check_form(key: str) -> None:
    if not FORM.fullmatch(key):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"the {HEADER} header must be 1 to 255 printable ASCII characters without spaces (a UUID will do)",
        )


def fingerprint(event: MessageSubmitted) -> str:
    """What the client asked for (its message, model, options), without what the API minted."""
    return hashlib.sha256(event.model_dump_json(exclude=IDENTITY).encode()).hexdigest()
