"""The bridge commits a request only when it and every earlier request are finished (rule 6)."""

from inference_bridge.offsets import OffsetTracker


def test_nothing_to_commit_before_anything_starts() -> None:
    assert OffsetTracker().committable() == {}


def test_a_running_request_holds_its_own_offset() -> None:
    tracker = OffsetTracker()
    tracker.start(0, 10)
    assert tracker.committable() == {0: 10}


def test_finishing_in_order_commits_past_the_last() -> None:
    tracker = OffsetTracker()
    tracker.start(0, 10)
    tracker.start(0, 11)
    tracker.finish(0, 10)
    tracker.finish(0, 11)
    assert tracker.committable() == {0: 12}


def test_a_later_request_finishing_first_commits_nothing_past_the_earlier() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.start(0, offset)
    tracker.finish(0, 11)
    tracker.finish(0, 12)
    assert tracker.committable() == {0: 10}
    tracker.finish(0, 10)
    assert tracker.committable() == {0: 13}


def test_gaps_in_offsets_do_not_block_commits() -> None:
    tracker = OffsetTracker()
    tracker.start(0, 10)
    tracker.start(0, 15)
    tracker.finish(0, 10)
    assert tracker.committable() == {0: 15}
    tracker.finish(0, 15)
    assert tracker.committable() == {0: 16}


def test_partitions_are_independent() -> None:
    tracker = OffsetTracker()
    tracker.start(0, 5)
    tracker.start(1, 7)
    tracker.finish(1, 7)
    assert tracker.committable() == {0: 5, 1: 8}


def test_only_moved_positions_are_reported_again() -> None:
    tracker = OffsetTracker()
    tracker.start(0, 1)
    tracker.start(1, 1)
    tracker.finish(0, 1)
    tracker.committable()
    tracker.finish(1, 1)
    assert tracker.committable() == {1: 2}
    assert tracker.committable() == {}


def test_a_forgotten_partition_is_neither_committed_nor_finished() -> None:
    tracker = OffsetTracker()
    tracker.start(3, 40)
    tracker.forget(3)
    tracker.finish(3, 40)  # a generation of the revoked partition ends late
    assert tracker.committable() == {}
