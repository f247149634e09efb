"""The group watchdog (processors and projections) counts only time out of the group, or holding
records unread, while Kafka answered and no store was waited on."""

from __future__ import annotations

import pytest

from infra.kafka_clients import Standing
from infra.membership import GroupWatchdog
from infra.store_errors import StoreWaits
from tests.unit.manual_clock import Clock

MEMBERSHIP_GRACE_S = 30.0
STALL_GRACE_S = 60.0
GROUP = "steno-processors"
MEMBER = Standing(member=True, behind={})
OUT = Standing(member=False, behind={})


def behind(*offsets: int) -> Standing:
    """A member whose partitions 0, 1, ... hold records past these committed offsets."""
    return Standing(member=True, behind={("steno.conversations", p): offset for p, offset in enumerate(offsets)})


# Each case: checks in order, as (seconds since start, what the check found, whether wedged).
CASES = {
    "out of the group for the grace period": [(29.0, OUT, False), (30.0, OUT, True)],
    "being a member again starts the wait over": [(20.0, MEMBER, False), (45.0, OUT, False), (50.0, OUT, True)],
    # a broker down for 100 s: the worker waits for it, and the wait starts when it answers
    "a Kafka that does not answer is not counted": [(100.0, None, False), (120.0, OUT, False), (130.0, OUT, True)],
    "records unread past the same offset for the stall grace period": [
        (0.0, behind(7), False),
        (59.0, behind(7), False),
        (60.0, behind(7), True),
    ],
    "a committed offset that moves starts the wait over": [
        (0.0, behind(7), False),
        (50.0, behind(9), False),
        (100.0, behind(9), False),
        (110.0, behind(9), True),
    ],
    "a partition caught up starts its wait over": [
        (0.0, behind(7), False),
        (50.0, MEMBER, False),
        (60.0, behind(7), False),
        (120.0, behind(7), True),
    ],
    "each partition is timed on its own": [
        (0.0, behind(7, 3), False),
        (50.0, behind(8, 3), False),
        (60.0, behind(9, 3), True),
    ],
    "a Kafka that does not answer starts the stall wait over": [
        (0.0, behind(7), False),
        (50.0, None, False),
        (60.0, behind(7), False),
        (119.0, behind(7), False),
        (120.0, behind(7), True),
    ],
}


@pytest.mark.parametrize("checks", CASES.values(), ids=CASES.keys())
def test_wedged_only_after_a_grace_period_with_kafka_answering(
    checks: list[tuple[float, Standing | None, bool]],
) -> None:
    clock = Clock()
    watchdog = GroupWatchdog(GROUP, MEMBERSHIP_GRACE_S, STALL_GRACE_S, StoreWaits(clock), clock)

    for at, found, wedged in checks:
        clock.now = at
        assert (watchdog.wedged(found) is not None) is wedged, f"at {at} s, after a check that found {found}"


def test_a_wait_on_a_store_starts_the_stall_wait_over() -> None:
    """A processor retrying an unreachable store (or waiting for a view) reads nothing, and is not wedged."""
    clock = Clock()
    store_waits = StoreWaits(clock)
    watchdog = GroupWatchdog(GROUP, MEMBERSHIP_GRACE_S, STALL_GRACE_S, store_waits, clock)
    assert watchdog.wedged(behind(7)) is None

    clock.now = 30.0
    store_waits.waiting()
    clock.now = 89.0
    assert watchdog.wedged(behind(7)) is None
    clock.now = 90.0
    assert watchdog.wedged(behind(7)) == (
        f"records of steno.conversations[0] past consumer group {GROUP}'s committed offset 7 unread for 60 s"
    )


def test_out_of_the_group_says_so() -> None:
    clock = Clock()
    watchdog = GroupWatchdog(GROUP, MEMBERSHIP_GRACE_S, STALL_GRACE_S, StoreWaits(clock), clock)
    clock.now = 30.0
    assert watchdog.wedged(OUT) == f"not a member of consumer group {GROUP} for 30 s"
