"""What `steno replay` accepts, what it refuses and why, and how a batch is cut into segments and steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from projections.generations import checked_name
from projections.history import batch_bytes
from projections.log_range import Scope, clamp, parse_bound
from projections.replay_command import Request
from projections.write_plan import MAX_SEGMENT, MAX_SEGMENT_BYTES, steps
from schemas.events import ConversationDeleted, ConversationStarted, Event


def test_a_bound_is_an_offset_or_a_time_in_utc_unless_it_names_its_zone() -> None:
    assert parse_bound("1234") == 1234
    assert parse_bound("2025-06-01T12:00:00") == datetime(2025, 6, 1, 12, tzinfo=UTC)
    assert parse_bound("2025-06-01T14:00:00+02:00") == datetime(2025, 6, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    assert parse_bound("2025-06-01T12:00:00Z") == datetime(2025, 6, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize("text", ["yesterday", "-5", "12.5", ""])
def test_a_bound_that_is_neither_says_what_would_do(text: str) -> None:
    with pytest.raises(ValueError, match=r"neither an offset .* nor an ISO 8601 time"):
        parse_bound(text)


def test_a_range_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match=r"--from .* is after --to"):
        Scope(start=10, end=5)
    with pytest.raises(ValueError, match=r"--from .* is after --to"):
        Scope(start=datetime(2025, 6, 2, tzinfo=UTC), end=datetime(2025, 6, 1, tzinfo=UTC))
    assert not Scope(start=5, end=datetime(2025, 6, 1, tzinfo=UTC)).whole_log  # resolved per partition


def test_offsets_are_clamped_to_what_the_log_holds() -> None:
    assert [clamp(offset, 10, 20) for offset in (0, 15, 99)] == [10, 15, 20]


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"start": "5", "swap": True}, "--swap rebuilds from the whole log"),
        ({"conversation": "c", "swap": True}, "--swap rebuilds from the whole log"),
        ({"swap": True, "reset": True}, "nothing to --reset"),
        ({"keyspace": "Steno-2"}, "cannot name a generation"),
        ({"keyspace": "2steno"}, "starting with a letter"),
        ({"end": "soon"}, "neither an offset"),
    ],
)
def test_contradictory_or_malformed_options_are_refused_with_the_way_out(options: dict, complaint: str) -> None:
    asked = {"start": None, "end": None, "conversation": None, "keyspace": None, "swap": False, "reset": False}
    with pytest.raises(ValueError, match=complaint):
        Request.of(**(asked | options))


def test_a_generation_name_must_be_a_keyspace_name() -> None:
    assert checked_name("steno_20250601_120000") == "steno_20250601_120000"
    with pytest.raises(ValueError, match="use 1-48 lower-case letters"):
        checked_name("x" * 49)


def started(conversation_id: str) -> Event:
    return ConversationStarted(conversation_id=conversation_id, user_id="u")


def deleted(conversation_id: str) -> Event:
    return ConversationDeleted(conversation_id=conversation_id, user_id="u")


def test_a_conversations_run_of_events_is_one_segment_and_conversations_share_a_step() -> None:
    batch = [started(c) for c in "aabacb"]  # positions: a0 a1 b2 a3 c4 b5

    assert steps(batch, batch_bytes) == [[[0, 1, 3], [2, 5], [4]]]
    assert steps([], batch_bytes) == []


def test_a_deletion_is_a_segment_of_its_own_and_what_follows_it_waits_for_it() -> None:
    batch = [started("a"), started("b"), deleted("a"), started("a"), started("b")]

    assert steps(batch, batch_bytes) == [[[0], [1, 4]], [[2]], [[3]]]


def test_a_long_run_is_cut_so_that_no_batch_grows_without_bound() -> None:
    batch = [started("a")] * (MAX_SEGMENT + 1)

    assert [[len(segment) for segment in step] for step in steps(batch, lambda event: 1)] == [[MAX_SEGMENT], [1]]


def test_a_run_is_cut_before_it_outweighs_what_cassandra_takes_in_one_batch() -> None:
    batch = [started(c) for c in "aaaab"]
    third = MAX_SEGMENT_BYTES // 3

    assert steps(batch, lambda event: third) == [[[0, 1, 2], [4]], [[3]]]
    assert steps(batch, lambda event: third + 1) == [[[0, 1], [4]], [[2, 3]]]
    assert steps(batch, lambda event: MAX_SEGMENT_BYTES + 1) == [
        [[0], [4]],
        [[1]],
        [[2]],
        [[3]],
    ]  # alone, whatever it weighs
