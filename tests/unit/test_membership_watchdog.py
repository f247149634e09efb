"""The membership watchdog (processors and projections) counts only time out of the group while Kafka answered."""

from __future__ import annotations

import pytest

from infra.membership import MembershipWatchdog
from tests.unit.manual_clock import Clock

GRACE_S = 30.0

# Each case: checks in order, as (seconds since start, what the check found, whether lost).
CASES = {
    "out of the group for the grace period": [(29.0, False, False), (30.0, False, True)],
    "being a member again starts the wait over": [(20.0, True, False), (45.0, False, False), (50.0, False, True)],
    # a broker down for 100 s: the worker waits for it, and the wait starts when it answers
    "a Kafka that does not answer is not counted": [(100.0, None, False), (120.0, False, False), (130.0, False, True)],
}


@pytest.mark.parametrize("checks", CASES.values(), ids=CASES.keys())
def test_lost_only_after_the_grace_period_out_of_the_group_with_kafka_answering(
    checks: list[tuple[float, bool | None, bool]],
) -> None:
    clock = Clock()
    watchdog = MembershipWatchdog(GRACE_S, clock)

    for at, member, lost in checks:
        clock.now = at
        assert watchdog.lost(member) is lost, f"at {at} s, after a check that found {member}"
