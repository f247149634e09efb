"""One reply at a time per conversation: how the API admits a new reply.

Before a message is written, its reply claims the conversation (`schemas.claims`: the key, and
the release the projection runs when it applies the reply's terminal event). A second message
while a reply is generating is refused (409) instead of interleaving two replies in one
conversation. The claim carries a TTL, so a reply whose end never comes frees it in the end.
"""

from __future__ import annotations

from enum import Enum
from typing import cast

import redis.asyncio as redis

from schemas.claims import NAMESPACE, RELEASE_LUA, claim_key

# KEYS: the claim, a key whose existence refuses it (the conversation's deletion marker). ARGV: the
# response id, the TTL in seconds, a finished response it may replace (or ""). Returns the holder
# if it keeps the claim, 0 if the refusing key exists. A response that holds the claim already (a
# message sent again under its idempotency key) claims it again.
CLAIM_OR_HOLDER_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[3] and held ~= ARGV[1] then return held end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""


class Refused(Enum):
    """What `claim_or_holder` answers when the key that refuses claims exists."""

    REFUSED = 0


# KEYS: the claim. ARGV: the response id that must hold it, the new one, the TTL in seconds.
TAKE_OVER_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
return false
"""


class ReplyClaims:
    """The claims over one Redis client (created with `decode_responses=True`); `namespace` is a
    parameter so that tests can use scratch ones."""

    def __init__(self, client: redis.Redis, namespace: str = NAMESPACE) -> None:
        self._redis = client
        self._namespace = namespace
        self._release = client.register_script(RELEASE_LUA)
        self._take_over = client.register_script(TAKE_OVER_LUA)
        self._claim_or_holder = client.register_script(CLAIM_OR_HOLDER_LUA)

    async def claim_or_holder(
        self,
        conversation_id: str,
        response_id: str,
        ttl_s: int,
        finished: str | None = None,
        unless_exists: str = "",
    ) -> str | Refused | None:
        """Claim the conversation for this response (None), or say which response holds it.

        `finished`, a response known to have ended, is replaced as the holder at once (its release
        by the projection may still be on its way): one round trip where a claim, a read of the
        holder to judge it, and a take-over took three. While the key `unless_exists` exists (a
        deletion marker) nothing is claimed: Refused, checked in the same round trip."""
        held = await self._claim_or_holder(
            keys=[self._key(conversation_id), unless_exists], args=[response_id, ttl_s, finished or ""]
        )
        return Refused.REFUSED if held == 0 else cast(str | None, held)

    async def release(self, conversation_id: str, response_id: str) -> None:
        """Release the claim if (and only if) this response still holds it (its message was not
        written: no terminal event will come to release it)."""
        await self._release(keys=[self._key(conversation_id)], args=[response_id])

    async def take_over(self, conversation_id: str, finished_id: str, response_id: str, ttl_s: int) -> bool:
        """Move the claim from a response known to have ended (whose release is still on its way)."""
        return bool(await self._take_over(keys=[self._key(conversation_id)], args=[finished_id, response_id, ttl_s]))

    async def holder(self, conversation_id: str) -> str | None:
        """The response id now being generated in the conversation, if any."""
        held: str | None = await self._redis.get(self._key(conversation_id))
        return held

    def _key(self, conversation_id: str) -> str:
        return claim_key(conversation_id, self._namespace)
