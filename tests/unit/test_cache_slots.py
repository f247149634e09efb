"""Which model instance a chat is served by (infra/models/_common/cache_slots.py): the one whose
KV cache holds its conversation, else the one used least recently."""

from __future__ import annotations

import itertools

from infra.models._common.cache_slots import CacheSlots, Chat, choose

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def conversation(name: str, exchanges: int) -> Chat:
    chat = [SYSTEM]
    for i in range(exchanges):
        chat += [{"role": "user", "content": f"{name} question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
    return chat


def ask(chat: Chat, question: str) -> Chat:
    return [*chat, {"role": "user", "content": question}]


def test_a_conversations_next_turn_goes_to_the_slot_that_served_its_last() -> None:
    chats = [conversation("a", 3), conversation("b", 5), conversation("c", 2)]

    assert choose(ask(chats[1], "more?"), chats, used=[3, 1, 2], busy=[False] * 3) == 1


def test_the_slot_holding_the_most_of_the_conversation_wins() -> None:
    chats = [conversation("a", 1), conversation("a", 4), conversation("a", 2)]

    assert choose(ask(conversation("a", 4), "more?"), chats, used=[1, 2, 3], busy=[False] * 3) == 1


def test_a_new_conversation_takes_the_least_recently_used_slot_not_one_sharing_only_the_system_prompt() -> None:
    chats = [conversation("a", 3), [], conversation("b", 2)]

    assert choose(ask([SYSTEM], "hello"), chats, used=[5, 0, 7], busy=[False] * 3) == 1
    assert choose(ask([SYSTEM], "hello"), chats, used=[5, 9, 7], busy=[False] * 3) == 0


def test_a_busy_slot_is_never_chosen_even_if_it_holds_the_conversation() -> None:
    chats = [conversation("a", 3), conversation("b", 2)]

    assert choose(ask(chats[0], "more?"), chats, used=[1, 2], busy=[True, False]) == 1


def test_a_retried_request_returns_to_the_slot_holding_its_prompt_and_the_failed_reply() -> None:
    prompt = ask(conversation("a", 2), "more?")
    chats = [conversation("b", 2), [*prompt, {"role": "assistant", "content": "half a rep"}]]

    assert choose(prompt, chats, used=[2, 1], busy=[False, False]) == 1


def test_a_lease_remembers_the_chat_with_its_reply_for_the_next_turn() -> None:
    counter = itertools.count()
    slots = CacheSlots(lambda: next(counter), size=2)
    first = ask([SYSTEM], "hi")

    with slots.lease(first) as (model, served):
        served.append({"role": "assistant", "content": "hello"})
    with slots.lease(ask([SYSTEM], "another conversation")) as (other, _):
        pass
    with slots.lease(ask([*first, {"role": "assistant", "content": "hello"}], "and?")) as (again, _):
        pass

    assert other != model
    assert again == model
