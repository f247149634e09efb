"""The collector settings every steno service starts with (infra.garbage_collector)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from infra import garbage_collector


@pytest.fixture
def collector_restored() -> Iterator[None]:
    """The test process's collector as it was: thresholds restored, nothing left frozen."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_tune_collects_the_young_generation_less_often(collector_restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    garbage_collector.tune()
    assert gc.get_threshold() == (garbage_collector.YOUNG_THRESHOLD, 10, 10)


def test_freeze_startup_hides_what_lives_and_frees_what_does_not(collector_restored: None) -> None:
    alive = Node()
    garbage = Node()
    garbage.other = Node()
    garbage.other.other = garbage  # a cycle: only the collector can free it
    freed = weakref.ref(garbage)
    del garbage

    garbage_collector.freeze_startup()

    assert freed() is None, "start-up's garbage was frozen instead of freed"
    assert gc.get_freeze_count() > 0
    assert not any(obj is alive for obj in gc.get_objects()), "a live start-up object is still in the collector's sight"
