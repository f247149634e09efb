"""Bad input is cheap, against the running API: each hostile request gets a clear 4xx at once and
leaves nothing in the log or the views."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import openai
import pytest

from infra.settings import settings
from ingest_api.auth import issue_token
from tests.integration.steno_client import StenoClient, scripted_reply, until

pytestmark = pytest.mark.integration

FAR_FUTURE = "ffffffff-ffff-7fff-bfff-ffffffffffff"  # a UUIDv7 minted, it says, in the year 10889
TWO_MIB = "x" * (2 * 1024 * 1024)
CHEAP_S = 1.0


@pytest.fixture
async def client(alice: StenoClient) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=f"{settings.api.url}/v1", api_key=issue_token(alice.user), max_retries=0)
    yield sdk
    await sdk.close()


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/conversations/{FAR_FUTURE}/messages",
        f"/v1/responses/{FAR_FUTURE}/events",
        f"/v1/responses/resp_{FAR_FUTURE}",
    ],
)
async def test_an_id_from_the_future_is_unknown_at_once(alice: StenoClient, path: str) -> None:
    started = time.monotonic()
    response = await alice.http.get(path)
    elapsed = time.monotonic() - started

    assert response.status_code == 404, response.text
    assert elapsed < CHEAP_S


async def test_an_oversized_openai_request_is_refused_in_openais_shape_and_writes_nothing(
    client: openai.AsyncOpenAI, alice: StenoClient
) -> None:
    too_much_context = "y" * (settings.api.max_prompt_bytes + 1)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as body_too_large:
        await client.chat.completions.create(
            model="scripted", messages=[{"role": "system", "content": TWO_MIB}, {"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.BadRequestError) as context_too_large:
        await client.responses.create(model="scripted", instructions=too_much_context, input="hi")
    elapsed = time.monotonic() - started

    assert body_too_large.value.status_code == 413
    assert "the limit is" in body_too_large.value.message
    assert context_too_large.value.code == "context_length_exceeded"
    assert elapsed < 2 * CHEAP_S
    # The user's one conversation is the exchange that fitted: the refused ones left nothing.
    answered = await client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "fits"}])
    assert answered.choices[0].message.content == scripted_reply("fits")
    await until(lambda: _listed(alice, 1))
    assert len((await alice.http.get("/v1/conversations")).json()) == 1


async def test_an_oversized_or_unknown_field_native_request_is_a_clear_4xx(alice: StenoClient) -> None:
    conversation_id = await alice.new_conversation()

    huge = await alice.http.post(f"/v1/conversations/{conversation_id}/messages", json={"content": TWO_MIB})
    unknown = await alice.http.post(f"/v1/conversations/{conversation_id}/messages", json={"content": "hi", "x": 1})
    wrong_type = await alice.http.post(f"/v1/conversations/{conversation_id}/messages", json={"content": 7})

    assert huge.status_code == 413 and "the limit is" in huge.json()["detail"]
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "x"]
    assert wrong_type.status_code == 422
    assert await alice.history(conversation_id) == []


async def _listed(alice: StenoClient, count: int) -> bool:
    return len((await alice.http.get("/v1/conversations")).json()) >= count
