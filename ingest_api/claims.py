"""One reply at a time per conversation: how the API admits a new reply.

Before a message is written, its reply claims the conversation (`schemas.claims`: the key, and
the release the projection runs when it applies the reply's terminal event). A second message
while a reply is generating is refused (409) instead of interleaving two replies in one
conversation. The claim carries a TTL, so a reply whose end never comes frees it in the end.
"""

from __future__ import annotations

import redis.asyncio as redis

from schemas.claims import NAMESPACE, RELEASE_LUA, claim_key

# KEYS: the claim. ARGV: the response id, the TTL in seconds, a finished response it may replace
# (or ""). Returns the holder if it keeps the claim.
CLAIM_OR_HOLDER_LUA = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[3] then return held end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
"""

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

    async def claim(self, conversation_id: str, response_id: str, ttl_s: int) -> bool:
        """Claim the conversation for this response; False while another response holds it."""
        return await self.claim_or_holder(conversation_id, response_id, ttl_s) is None

    async def claim_or_holder(
        self, conversation_id: str, response_id: str, ttl_s: int, finished: str | None = None
    ) -> str | None:
        """Claim the conversation for this response (None), or say which response holds it.

        `finished`, a response known to have ended, is replaced as the holder at once (its release
        by the projection may still be on its way): one round trip where a claim, a read of the
        holder to judge it, and a take-over took three."""
        held: str | None = await self._claim_or_holder(
            keys=[self._key(conversation_id)], args=[response_id, ttl_s, finished or ""]
        )
        return held

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
