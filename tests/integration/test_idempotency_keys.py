"""A message sent again under its `Idempotency-Key`, or a regeneration asked again, against the
running stack: the same ids, one message and one reply in history, whatever became of the first
request's write."""

from __future__ import annotations

import asyncio

import pytest

from ingest_api.idempotency import IdempotencyKeys, RegenerationRecords
from projections import active_context
from schemas.events import MessageSubmitted, new_id
from schemas.topics import CONVERSATIONS
from tests.integration.kafka_log import events_of
from tests.integration.steno_client import StenoClient, scripted, scripted_reply, text_of

pytestmark = pytest.mark.integration


async def post(client: StenoClient, conversation: str, content: str, key: str) -> tuple[int, dict]:
    response = await client.post_message(conversation, content, idempotency_key=key)
    return response.status_code, response.json()


async def one_exchange(client: StenoClient, conversation: str, ids: dict, content: str) -> None:
    """History holds the message and its one reply, under these ids, and nothing else."""
    turns = await client.settled_history(conversation)
    assert [(t["id"], t["role"], t["status"]) for t in turns] == [
        (ids["message_id"], "user", "accepted"),
        (ids["response_id"], "assistant", "completed"),
    ]
    assert turns[0]["content"] == content


async def test_a_message_sent_again_under_its_key_once_answered_is_not_written_again(alice: StenoClient) -> None:
    conversation, key = await alice.new_conversation(), new_id()
    status, first = await post(alice, conversation, "hello once", key)
    assert status == 202, first
    await alice.events(first["response_id"])
    await one_exchange(alice, conversation, first, "hello once")

    status, again = await post(alice, conversation, "hello once", key)

    assert (status, again) == (202, first)
    await one_exchange(alice, conversation, first, "hello once")
    written = [e for e in events_of(CONVERSATIONS, conversation) if isinstance(e, MessageSubmitted)]
    assert len(written) == 1  # history held it: nothing was sent again
    status, _ = await post(alice, conversation, "and a new message", new_id())  # the claim was not left held
    assert status == 202


async def test_a_message_sent_again_while_its_reply_streams_gets_that_one_reply(alice: StenoClient) -> None:
    conversation, key = await alice.new_conversation(), new_id()
    content = scripted(" ".join(f"w{i}" for i in range(20)), itl_ms=100)
    status, first = await post(alice, conversation, content, key)
    assert status == 202, first

    status, again = await post(alice, conversation, content, key)

    assert (status, again) == (202, first)  # not a 409 for its own reply in progress
    events = await alice.events(first["response_id"])
    assert text_of(events) == scripted_reply(" ".join(f"w{i}" for i in range(20)))
    assert [e.event for e in events].count("done") == 1
    await one_exchange(alice, conversation, first, content)


async def test_a_message_whose_first_write_never_landed_is_written_under_the_first_ids(alice: StenoClient) -> None:
    """The first request recorded its ids and died (or Kafka refused it) before its event was in
    the log: the request again writes it, under those ids."""
    conversation, key = await alice.new_conversation(), new_id()
    lost = MessageSubmitted(
        conversation_id=conversation,
        user_id=alice.user,
        message_id=new_id(),
        response_id=new_id(),
        content="never landed",
        model="scripted",
    )
    client = active_context.connect()
    try:
        assert await IdempotencyKeys(client).earlier(key, lost) is None
    finally:
        await client.aclose()

    status, again = await post(alice, conversation, "never landed", key)

    assert (status, again) == (202, {"message_id": lost.message_id, "response_id": lost.response_id})
    await alice.events(again["response_id"])
    await one_exchange(alice, conversation, again, "never landed")
    (written,) = [e for e in events_of(CONVERSATIONS, conversation) if isinstance(e, MessageSubmitted)]
    assert (written.event_id, written.occurred_at) == (lost.event_id, lost.occurred_at)


async def test_a_regeneration_whose_first_write_never_landed_is_written_under_the_first_ids(
    alice: StenoClient,
) -> None:
    """As a message under its key: the regeneration recorded, its event lost; asked again, it is
    written, though history holds its message (it still shows the reply it replaces)."""
    conversation = await alice.new_conversation()
    status, question = await post(alice, conversation, "regenerate me", new_id())
    assert status == 202, question
    await alice.events(question["response_id"])
    await one_exchange(alice, conversation, question, "regenerate me")
    lost = MessageSubmitted(
        conversation_id=conversation,
        user_id=alice.user,
        message_id=question["message_id"],
        response_id=new_id(),
        content="regenerate me",
        model="scripted",
        replaces=question["response_id"],
    )
    client = active_context.connect()
    try:
        assert await RegenerationRecords(client).earlier(lost) is None
    finally:
        await client.aclose()

    again = await alice.http.post(f"/v1/responses/{question['response_id']}/regenerate")

    assert (again.status_code, again.json()) == (202, {"message_id": lost.message_id, "response_id": lost.response_id})
    await alice.events(lost.response_id)
    await one_exchange(alice, conversation, again.json(), "regenerate me")
    (written,) = [e for e in events_of(CONVERSATIONS, conversation) if isinstance(e, MessageSubmitted) and e.replaces]
    assert (written.event_id, written.occurred_at) == (lost.event_id, lost.occurred_at)


async def test_the_same_key_with_another_message_is_refused_and_writes_nothing(alice: StenoClient) -> None:
    conversation, key = await alice.new_conversation(), new_id()
    status, first = await post(alice, conversation, "the first message", key)
    assert status == 202, first
    await alice.events(first["response_id"])

    status, refused = await post(alice, conversation, "another message", key)

    assert status == 422, refused
    assert "use a new key for each new message" in refused["detail"]
    await one_exchange(alice, conversation, first, "the first message")


async def test_a_key_is_its_callers_and_its_conversations(alice: StenoClient, bob: StenoClient) -> None:
    """The same key in another conversation, or from another user, is another message."""
    key = new_id()
    conversations = await asyncio.gather(alice.new_conversation(), alice.new_conversation(), bob.new_conversation())
    sent = await asyncio.gather(
        *(post(client, c, "same words", key) for client, c in zip((alice, alice, bob), conversations, strict=True))
    )
    assert [status for status, _ in sent] == [202, 202, 202]
    assert len({ids["message_id"] for _, ids in sent}) == 3


async def test_a_conversation_created_again_under_its_key_is_the_same_conversation(alice: StenoClient) -> None:
    key = new_id()
    created = [await alice.http.post("/v1/conversations", json={"title": "once"}, headers={"Idempotency-Key": key})]
    created.append(await alice.http.post("/v1/conversations", json={"title": "once"}, headers={"Idempotency-Key": key}))
    other = await alice.http.post("/v1/conversations", json={"title": "another"}, headers={"Idempotency-Key": key})

    assert [c.status_code for c in created] == [201, 201], [c.text for c in created]
    assert created[0].json() == created[1].json()
    assert other.status_code == 422, other.text
    listed = (await alice.http.get("/v1/conversations")).json()
    assert [(c["id"], c["title"]) for c in listed] == [(created[0].json()["id"], "once")]


@pytest.mark.parametrize("key", ["", "has a space", "x" * 256])
async def test_a_key_of_the_wrong_form_is_refused_before_anything_is_written(alice: StenoClient, key: str) -> None:
    conversation = await alice.new_conversation()
    status, refused = await post(alice, conversation, "hello", key)
    assert status == 400, refused
    assert "printable ASCII" in refused["detail"]
    assert await alice.history(conversation) == []
