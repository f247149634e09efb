"""The claim that admits one reply at a time per conversation: a Redis key two components share.

The API takes it before it writes a new message (`ingest_api.claims`): while another reply holds
it, the message is refused. The projection gives it back when it applies that reply's terminal
event (`projections.active_context`), and a TTL frees it if that event never comes. The key's
name and the compare-and-delete that releases it are the contract between the two, so, like a
topic name, they live here rather than in either component.

    {namespace}:inflight:<conversation_id>   the id of the response being generated

Claims stay in the base namespace whatever generation of the views is live: they are admission
state, not a view of the log, and must outlive a swap.
"""

from __future__ import annotations

NAMESPACE = "steno"

# KEYS: the claim. ARGV: the response id that must still hold it; a later reply's claim stays.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def claim_key(conversation_id: str, namespace: str = NAMESPACE) -> str:
    return f"{namespace}:inflight:{conversation_id}"
