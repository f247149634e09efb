"""The bridge sends each generation to the Triton endpoint with the fewest streams in flight."""

from collections import Counter
from contextlib import ExitStack

import pytest

from inference_bridge.router import LeastBusyRouter, chat_key
from schemas.events import ChatTurn


def test_a_busy_endpoint_is_avoided() -> None:
    router = LeastBusyRouter({"a": "A", "b": "B"})
    with router.lease() as first, router.lease() as second:
        assert {first, second} == {"A", "B"}
        with router.lease() as third, router.lease() as fourth:
            assert {third, fourth} == {"A", "B"}
            assert router.in_flight() == {"a": 2, "b": 2}


def test_the_endpoint_that_frees_up_gets_the_next_stream() -> None:
    router = LeastBusyRouter({"a": "A", "b": "B", "c": "C"})
    with router.lease(), router.lease():
        with router.lease() as freed:
            pass
        with router.lease() as chosen:
            assert chosen == freed


def test_ties_rotate_instead_of_piling_onto_the_first_endpoint() -> None:
    router = LeastBusyRouter({"a": "A", "b": "B", "c": "C"})
    chosen = []
    for _ in range(6):
        with router.lease() as client:
            chosen.append(client)
    assert chosen == ["A", "B", "C", "A", "B", "C"]


def test_a_failed_stream_releases_its_endpoint() -> None:
    router = LeastBusyRouter({"a": "A"})
    with pytest.raises(RuntimeError), router.lease():
        raise RuntimeError("stream broke")
    assert router.in_flight() == {"a": 0}


def test_an_empty_fleet_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="needs at least one endpoint"):
        LeastBusyRouter({})


def test_an_endpoint_marked_down_is_chosen_only_when_all_are_down() -> None:
    router = LeastBusyRouter({"a": "A", "b": "B"})
    router.mark("A", down=True)
    with router.lease() as first, router.lease() as second:
        assert (first, second) == ("B", "B")
    assert router.clients() == ["B", "A"], "probed in the order a lease would choose"
    router.mark("B", down=True)
    with router.lease() as chosen:
        assert chosen in {"A", "B"}
    router.mark("A", down=False)
    with router.lease() as chosen:
        assert chosen == "A"


def sticky(endpoints: int = 2, slack: int = 1) -> LeastBusyRouter[str]:
    urls = [f"triton-{n}:8001" for n in range(endpoints)]
    return LeastBusyRouter({url: url.upper() for url in urls}, affinity_slack=slack)


def key(*contents: str) -> bytes:
    """The chat key of a prompt: the system prompt, then the turns (user first, alternating)."""
    turns = [ChatTurn(role="system", content="be brief")]
    turns += [ChatTurn(role="assistant" if n % 2 else "user", content=content) for n, content in enumerate(contents)]
    return chat_key(turns)


def test_a_chats_next_turn_returns_to_the_endpoint_of_its_last() -> None:
    router = sticky()
    with router.lease(key("hello", "hi!", "how are you?")) as first:
        pass
    for other in range(10):
        with router.lease(key(f"another chat {other}")):
            pass
    with router.lease(key("hello", "hi!", "how are you?", "fine.", "and you?")) as again:
        assert again == first


def test_every_bridge_sends_a_chat_to_the_same_endpoint_without_having_seen_it() -> None:
    """An OpenAI client's turns are new conversations, on any partition: any bridge may get one."""
    bridges = [sticky(endpoints=4) for _ in range(3)]
    for chat in range(50):
        chosen = set()
        for bridge in bridges:
            with bridge.lease(key(f"chat {chat}")) as endpoint:
                chosen.add(endpoint)
        assert len(chosen) == 1


def test_chats_spread_over_the_endpoints_and_a_new_endpoint_takes_only_chats_it_wins() -> None:
    four, five = sticky(endpoints=4, slack=10**6), sticky(endpoints=5, slack=10**6)
    before, after = {}, {}
    for chat in range(2000):
        with four.lease(key(f"chat {chat}")) as endpoint:
            before[chat] = endpoint
        with five.lease(key(f"chat {chat}")) as endpoint:
            after[chat] = endpoint

    shares = Counter(before.values())
    assert len(shares) == 4 and min(shares.values()) > 2000 / 4 * 0.8
    moved = [chat for chat in before if after[chat] != before[chat]]
    assert {after[chat] for chat in moved} == {"TRITON-4:8001"}
    assert 2000 / 5 * 0.8 < len(moved) < 2000 / 5 * 1.2


def test_the_chats_endpoint_is_left_once_it_is_busier_than_the_slack() -> None:
    router = sticky(slack=1)
    chat = key("hello")
    with router.lease(chat) as home:
        pass
    other = next(url for url in router.in_flight() if url.upper() != home)
    with ExitStack() as streams:
        assert streams.enter_context(router.lease(chat)) == home  # 1 more than the other
        assert streams.enter_context(router.lease(chat)) == home  # 2 more: past the slack
        assert router.in_flight() == {home.lower(): 2, other: 0}
        assert streams.enter_context(router.lease(chat)) == other.upper()


def test_a_chat_whose_endpoint_is_down_goes_elsewhere() -> None:
    router = sticky()
    with router.lease(key("hello")) as home:
        pass
    router.mark(home, down=True)
    with router.lease(key("hello")) as elsewhere:
        assert elsewhere != home
