"""The retry waits: doubling from the first, then held at the ceiling."""

from itertools import islice

from infra.backoff import doubling


def test_waits_double_from_the_first_and_stay_at_the_ceiling() -> None:
    assert list(islice(doubling(0.5, 5.0), 7)) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
