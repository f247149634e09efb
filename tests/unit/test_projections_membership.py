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


def checks(*found: bool | Standing | None) -> Callable[[], Standing | None]:
    """A standing lookup that finds each of `found` in turn (a bool: a member, or not, with no
    records waiting; None: no answer), then raises ChecksOver."""
    left = list(found)

    def check() -> Standing | None:
        if not left:
            raise ChecksOver
        standing = left.pop(0)
        return Standing(member=standing, behind={}) if isinstance(standing, bool) else standing

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


async def test_a_member_holding_records_it_does_not_read_past_the_stall_grace_period_exits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exits = recorded_exits(monkeypatch)
    monkeypatch.setattr(runner.settings.kafka, "stall_grace_s", 0.0)
    stuck = Standing(member=True, behind={("steno.conversations", 0): 7})

    await runner.exit_if_wedged("steno-projections", checks(stuck, stuck), check_every_s=0.0)

    assert exits.statuses == [wedged.EXIT_WEDGED]
