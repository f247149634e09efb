"""The sliding windows under the analytics figures: what is inside a window, and bounded memory."""

from __future__ import annotations

from projections.analytics.windows import LastSeen, Quantiles, WindowedCounts, WindowedSamples

MINUTE_MS = 60_000
NOW = 1_800_000_000_000


def test_counts_keep_totals_and_what_is_inside_the_window() -> None:
    counts: WindowedCounts[str] = WindowedCounts(MINUTE_MS)
    counts.add("weapons", NOW - 10_000, NOW)
    counts.add("weapons", NOW - 50_000, NOW)
    counts.add("malware", NOW - 5_000, NOW)
    counts.add("weapons", NOW - 2 * MINUTE_MS, NOW)  # a replayed old event: the total only

    assert counts.totals == {"weapons": 3, "malware": 1}
    assert counts.recent(NOW) == {"weapons": 2, "malware": 1}
    assert counts.recent(NOW + 15_000) == {"weapons": 1, "malware": 1}  # the one 50 s old slid out
    assert counts.recent(NOW + MINUTE_MS) == {}
    assert counts.totals == {"weapons": 3, "malware": 1}


def test_counts_hold_one_bucket_per_second_of_the_window_at_most() -> None:
    counts: WindowedCounts[str] = WindowedCounts(MINUTE_MS, bucket_ms=1000)
    for at in range(NOW - 10 * MINUTE_MS, NOW, 100):  # ten events a second for ten minutes
        counts.add("submitted", at, at)
        counts.recent(at)

    assert counts.recent(NOW)["submitted"] == 600
    assert len(counts._buckets) <= 61  # the window's seconds, and the one its start falls in
    assert counts.totals["submitted"] == 6000


def test_quantiles_of_the_samples_inside_the_window() -> None:
    samples = WindowedSamples(5 * MINUTE_MS, max_samples=1000)
    assert samples.quantiles(NOW) is None
    for value in range(1, 101):
        samples.add(float(value), NOW - 1000, NOW)
    samples.add(10_000.0, NOW - 6 * MINUTE_MS, NOW)  # too old to count

    assert samples.quantiles(NOW) == Quantiles(p50=50.5, p95=95.05, samples=100)
    assert samples.quantiles(NOW + 5 * MINUTE_MS) is None


def test_samples_keep_only_the_newest_when_full() -> None:
    samples = WindowedSamples(5 * MINUTE_MS, max_samples=10)
    for value in range(100):
        samples.add(float(value), NOW, NOW)

    quantiles = samples.quantiles(NOW)
    assert quantiles is not None and quantiles.samples == 10
    assert quantiles.p50 == 94.5  # the median of 90..99


def test_last_seen_counts_keys_active_within_the_window() -> None:
    seen: LastSeen[str] = LastSeen(5 * MINUTE_MS)
    seen.add("a", NOW - 4 * MINUTE_MS, NOW)
    seen.add("a", NOW - 6 * MINUTE_MS, NOW)  # an older event does not move its last activity back
    seen.add("b", NOW - 1000, NOW)
    seen.add("c", NOW - 10 * MINUTE_MS, NOW)

    assert seen.count(NOW) == 2
    assert seen.count(NOW + 2 * MINUTE_MS) == 1
    assert seen.count(NOW + 5 * MINUTE_MS) == 0
