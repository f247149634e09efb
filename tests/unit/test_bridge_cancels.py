"""Cancels read before their request are remembered, briefly and in bounded number."""

from inference_bridge.cancels import PendingCancels
from tests.unit.manual_clock import Clock


def test_a_remembered_cancel_is_applied_once() -> None:
    cancels = PendingCancels(ttl_s=60, capacity=10, clock=Clock())
    cancels.add("r1")
    assert cancels.take("r1")
    assert not cancels.take("r1")


def test_unknown_responses_are_not_cancelled() -> None:
    cancels = PendingCancels(ttl_s=60, capacity=10, clock=Clock())
    cancels.add("r1")
    assert not cancels.take("r2")


def test_a_cancel_expires() -> None:
    clock = Clock()
    cancels = PendingCancels(ttl_s=60, capacity=10, clock=clock)
    cancels.add("old")
    clock.now = 30
    cancels.add("young")
    clock.now = 61
    assert not cancels.take("old")
    assert cancels.take("young")


def test_the_oldest_cancels_make_room_for_new_ones() -> None:
    cancels = PendingCancels(ttl_s=60, capacity=2, clock=Clock())
    for response_id in ("r1", "r2", "r3"):
        cancels.add(response_id)
    assert len(cancels) == 2
    assert not cancels.take("r1")
    assert cancels.take("r3")


def test_repeating_a_cancel_renews_it() -> None:
    clock = Clock()
    cancels = PendingCancels(ttl_s=60, capacity=10, clock=clock)
    cancels.add("r1")
    clock.now = 50
    cancels.add("r1")
    clock.now = 100
    assert cancels.take("r1")
