"""The API's reply claims against the real Redis: claiming and learning the holder in one round trip."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ingest_api.claims import Refused, ReplyClaims
from schemas.events import new_id
from tests.integration.test_projections import scratch_namespace


@pytest.fixture
async def claims() -> AsyncIterator[ReplyClaims]:
    async with scratch_namespace() as (client, namespace):
        yield ReplyClaims(client, namespace)


async def test_a_claim_either_succeeds_or_names_the_response_holding_it(claims: ReplyClaims) -> None:
    conversation, first, second = new_id(), new_id(), new_id()
    assert await claims.claim_or_holder(conversation, first, ttl_s=60) is None
    assert await claims.claim_or_holder(conversation, second, ttl_s=60) == first
    assert await claims.holder(conversation) == first
    await claims.release(conversation, first)
    assert await claims.claim_or_holder(conversation, second, ttl_s=60) is None
    assert await claims.holder(conversation) == second


async def test_a_finished_holder_is_replaced_in_the_same_round_trip(claims: ReplyClaims) -> None:
    """The projection releases a reply's claim a moment after its end; the API, which saw the end,
    claims over it at once. Any other holder keeps the claim."""
    conversation, first, second, third = new_id(), new_id(), new_id(), new_id()
    assert await claims.claim_or_holder(conversation, first, ttl_s=60) is None
    assert await claims.claim_or_holder(conversation, second, ttl_s=60, finished=third) == first
    assert await claims.claim_or_holder(conversation, second, ttl_s=60, finished=first) is None
    assert await claims.holder(conversation) == second


async def test_nothing_is_claimed_while_the_refusing_key_exists(claims: ReplyClaims) -> None:
    conversation, response = new_id(), new_id()
    marker = f"{claims._namespace}:deleted:{conversation}"  # in the scratch namespace, deleted afterwards
    await claims._redis.set(marker, "1")
    assert await claims.claim_or_holder(conversation, response, ttl_s=60, unless_exists=marker) is Refused.REFUSED
    assert await claims.holder(conversation) is None


async def test_the_holder_claims_again_and_no_other(claims: ReplyClaims) -> None:
    """A message sent again under its idempotency key claims for the same response: it holds the
    claim already (its first request's), and must not wait on itself for a 409."""
    conversation, first, second = new_id(), new_id(), new_id()
    assert await claims.claim_or_holder(conversation, first, ttl_s=60) is None
    assert await claims.claim_or_holder(conversation, first, ttl_s=60) is None
    assert await claims.claim_or_holder(conversation, second, ttl_s=60) == first
    assert await claims.holder(conversation) == first
