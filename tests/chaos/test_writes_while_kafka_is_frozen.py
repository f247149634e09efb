"""A write the API cannot get Kafka to confirm is answered 503 with `Retry-After`, saying why and
what to do, never a bare 500: the request was fine, the log was away. The chaos suite's frozen
broker found conversation creation (and renames, deletions and cancels) answering 500 there.

A message answered so, and sent again under its `Idempotency-Key` once Kafka is back, is in
history once: the frozen broker takes the first send when it wakes (the request waited in its
socket), so without the key the second send doubled it. A regeneration answered so and asked
again is the same regeneration (it needs no key): without that, the second was refused, its reply
no longer the last."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

import httpx
import pytest

from infra.kafka_clients import DELIVERY_TIMEOUT_S
from infra.settings import settings
from ingest_api.auth import issue_token
from schemas.events import new_id
from tests.chaos.faults import heal, server_pid
from tests.integration.steno_client import StenoClient, scripted_reply

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(300)]


@asynccontextmanager
async def patient_client() -> AsyncIterator[StenoClient]:
    """A client that waits for the API's answer past a produce's delivery timeout (its 503)."""
    client = StenoClient()
    client.http.timeout = httpx.Timeout(DELIVERY_TIMEOUT_S + 30)
    try:
        yield client
    finally:
        await client.close()


async def while_kafka_is_frozen(request: Awaitable[httpx.Response]) -> httpx.Response:
    """The request's answer, made with the broker SIGSTOPped; the stack healed after SIGCONT."""
    kafka = server_pid("kafka")
    os.killpg(kafka, signal.SIGSTOP)
    try:
        return await request
    finally:
        os.killpg(kafka, signal.SIGCONT)
        await asyncio.to_thread(heal)


async def test_starting_a_conversation_while_kafka_is_frozen_is_a_503_that_says_to_send_it_again() -> None:
    headers = {"Authorization": f"Bearer {issue_token(f'user-{new_id()}')}"}
    async with httpx.AsyncClient(base_url=settings.api.url, headers=headers, timeout=DELIVERY_TIMEOUT_S + 30) as client:
        starting = client.post("/v1/conversations", json={"title": "while Kafka is frozen"})
        response = await while_kafka_is_frozen(starting)

    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"].isdigit()
    detail = response.json()["detail"]
    assert "Kafka did not confirm" in detail and "send the request again" in detail


async def test_a_message_answered_503_and_sent_again_under_its_key_is_in_history_once() -> None:
    async with patient_client() as alice:
        conversation = await alice.new_conversation()
        content, key = "sent while Kafka was frozen", new_id()
        refused = await while_kafka_is_frozen(alice.post_message(conversation, content, idempotency_key=key))
        assert refused.status_code == 503, refused.text

        sent = await alice.post_message(conversation, content, idempotency_key=key)

        assert sent.status_code == 202, sent.text
        await alice.events(sent.json()["response_id"])
        turns = await alice.settled_history(conversation, timeout_s=60)
    assert [(t["role"], t["content"], t["status"]) for t in turns] == [
        ("user", content, "accepted"),
        ("assistant", scripted_reply(content), "completed"),
    ]


async def test_a_regeneration_answered_503_and_asked_again_is_in_history_once() -> None:
    async with patient_client() as alice:
        conversation = await alice.new_conversation()
        content = "regenerated while Kafka was frozen"
        question = await alice.send(conversation, content)
        await alice.events(question["response_id"])
        await alice.settled_history(conversation)
        regenerate = f"/v1/responses/{question['response_id']}/regenerate"
        refused = await while_kafka_is_frozen(alice.http.post(regenerate))
        assert refused.status_code == 503, refused.text

        again = await alice.http.post(regenerate)

        assert again.status_code == 202, again.text
        await alice.events(again.json()["response_id"])
        turns = await alice.settled_history(conversation, timeout_s=60)
    assert [(t["id"], t["content"], t["status"]) for t in turns] == [
        (question["message_id"], content, "accepted"),
        (again.json()["response_id"], scripted_reply(content), "completed"),
    ]
