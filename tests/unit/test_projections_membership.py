"""The projections end themselves once out of their consumer group, or in it not reading, for the
grace period while Kafka answered (`projections.runner.exit_if_wedged`): after a frozen broker's
return, the chaos suite saw their librdkafka consumer, its partitions revoked, never join again."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from infra import wedged
from infra.kafka_clients import Standing
from projections import runner
from tests.unit.recorded_exits import recorded_exits


class ChecksOver(Exception):
    """Every membership check the test prepared has been made."""


def checks(*found: bool | None) -> Callable[[], Standing | None]:
    """A standing lookup that finds membership (or no answer) as each of `found` in turn, then
    raises ChecksOver."""
    left = list(found)

    def check() -> Standing | None:
        if not left:
            raise ChecksOver
        member = left.pop(0)
        return None if member is None else Standing(member=member, behind={})

    return check


async def test_out_of_the_group_past_the_grace_period_with_kafka_answering_exits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exits = recorded_exits(monkeypatch)
    monkeypatch.setattr(runner.settings.kafka, "membership_grace_s", 0.0)

    away_member_out = checks(None, True, False)  # Kafka away, a member, out
    await runner.exit_if_wedged("steno-projections", away_member_out, check_every_s=0.0)

    assert exits.statuses == [wedged.EXIT_WEDGED]


async def test_a_member_is_left_running(monkeypatch: pytest.MonkeyPatch) -> None:
    exits = recorded_exits(monkeypatch)
    monkeypatch.setattr(runner.settings.kafka, "membership_grace_s", 0.0)

    with pytest.raises(ChecksOver):  # it kept checking to the end, never exiting
        await runner.exit_if_wedged("steno-projections", checks(True, None, True), check_every_s=0.0)
    assert exits.statuses == []
