"""The processors' watchdog counts only time out of the group while Kafka answered."""

from __future__ import annotations

from stream_processors.membership_watchdog import MembershipWatchdog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_out_of_the_group_for_the_grace_period_is_lost() -> None:
    clock = Clock()
    watchdog = MembershipWatchdog(30.0, clock)

    clock.now = 29.0
    assert not watchdog.lost(False)
    clock.now = 30.0
    assert watchdog.lost(False)


def test_being_a_member_again_starts_the_wait_over() -> None:
    clock = Clock()
    watchdog = MembershipWatchdog(30.0, clock)

    clock.now = 20.0
    assert not watchdog.lost(True)
    clock.now = 45.0
    assert not watchdog.lost(False)
    clock.now = 50.0
    assert watchdog.lost(False)


def test_a_kafka_that_does_not_answer_is_not_counted_against_the_worker() -> None:
    clock = Clock()
    watchdog = MembershipWatchdog(30.0, clock)

    clock.now = 100.0
    assert not watchdog.lost(None)  # a broker down for 100 s: the worker waits for it
    clock.now = 120.0
    assert not watchdog.lost(False)
    clock.now = 130.0
    assert watchdog.lost(False)
