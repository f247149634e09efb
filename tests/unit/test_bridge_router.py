"""The bridge sends each generation to the Triton endpoint with the fewest streams in flight."""

from contextlib import ExitStack

import pytest

from inference_bridge.router import LeastBusyRouter


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


def sticky(endpoints: int = 2, slack: int = 1, remembered: int = 100) -> LeastBusyRouter[str]:
    urls = "abcdefgh"[:endpoints]
    return LeastBusyRouter({url: url.upper() for url in urls}, affinity_slack=slack, remembered=remembered)


def test_a_conversations_next_turn_returns_to_the_endpoint_of_its_last() -> None:
    router = sticky()
    with router.lease("conversation-1") as first:
        pass
    with router.lease("conversation-2") as other:
        assert other != first
    with router.lease("conversation-1") as again:
        assert again == first  # a tie would have rotated to the other endpoint


def test_the_conversations_endpoint_is_left_once_it_is_busier_than_the_slack() -> None:
    router = sticky(slack=1)
    with router.lease("conversation-1") as home:
        pass
    with ExitStack() as streams:
        streams.enter_context(router.lease("p"))
        streams.enter_context(router.lease("q"))  # one stream on each endpoint
        assert streams.enter_context(router.lease("conversation-1")) == home  # 1 more than the other
        assert streams.enter_context(router.lease("conversation-1")) == home  # 2 more: past the slack
        assert router.in_flight()[home.lower()] == 3
        assert streams.enter_context(router.lease("conversation-1")) != home


def test_a_conversation_whose_endpoint_is_down_goes_elsewhere() -> None:
    router = sticky()
    with router.lease("conversation-1") as home:
        pass
    router.mark(home, down=True)
    with router.lease("conversation-1") as elsewhere:
        assert elsewhere != home


def test_only_the_most_recent_conversations_are_remembered() -> None:
    router = sticky(remembered=1)
    with router.lease("conversation-1") as first:
        pass
    with router.lease("conversation-2"), router.lease("conversation-3"):
        pass  # conversation-3 is the one remembered
    with router.lease("conversation-1") as again:
        assert again != first  # forgotten: the endpoint chosen least recently, by the tie rule
