"""The bridge sends each generation to the Triton endpoint with the fewest streams in flight."""

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
