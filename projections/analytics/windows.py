"""Figures over a sliding window of event time, in bounded memory.

Time is always passed in (milliseconds since the epoch), never read from the clock, so the
figures are a pure function of the events and the moment asked about. An event older than the
window when it arrives (a replay of history) counts in the totals only.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)


class WindowedCounts(Generic[K]):
    """Counts per key since the start and over the last `window_ms`, kept in `bucket_ms` buckets.

    Memory is one small counter per bucket still inside the window, whatever the event rate.
    """

    def __init__(self, window_ms: int, bucket_ms: int = 1000) -> None:
        self._window_ms = window_ms
        self._bucket_ms = bucket_ms
        self._buckets: dict[int, Counter[K]] = {}
        self.totals: Counter[K] = Counter()

    def add(self, key: K, at_ms: int, now_ms: int) -> None:
        self.totals[key] += 1
        if at_ms > now_ms - self._window_ms:
            self._buckets.setdefault(at_ms // self._bucket_ms, Counter())[key] += 1

    def recent(self, now_ms: int) -> Counter[K]:
        """The counts of the buckets that overlap the window (its start rounds down to a bucket's)."""
        oldest = (now_ms - self._window_ms) // self._bucket_ms
        for bucket in [b for b in self._buckets if b < oldest]:
            del self._buckets[bucket]
        return sum(self._buckets.values(), Counter())


@dataclass(frozen=True)
class Quantiles:
    p50: float
    p95: float
    samples: int


class WindowedSamples:
    """The observations of the last `window_ms`, at most `max_samples` of them (the newest)."""

    def __init__(self, window_ms: int, max_samples: int) -> None:
        self._window_ms = window_ms
        self._samples: deque[tuple[int, float]] = deque(maxlen=max_samples)

    def add(self, value: float, at_ms: int, now_ms: int) -> None:
        if at_ms > now_ms - self._window_ms:
            self._samples.append((at_ms, value))

    def quantiles(self, now_ms: int) -> Quantiles | None:
        """p50 and p95 of the observations inside the window; None when there are none."""
        cutoff = now_ms - self._window_ms
        kept = [(at, value) for at, value in self._samples if at > cutoff]
        self._samples = deque(kept, maxlen=self._samples.maxlen)
        if not kept:
            return None
        p50, p95 = np.quantile([value for _, value in kept], [0.5, 0.95])
        return Quantiles(p50=float(p50), p95=float(p95), samples=len(kept))


class LastSeen(Generic[K]):
    """The keys seen within the last `window_ms` (e.g. conversations with recent activity)."""

    def __init__(self, window_ms: int) -> None:
        self._window_ms = window_ms
        self._seen: dict[K, int] = {}

    def add(self, key: K, at_ms: int, now_ms: int) -> None:
        if at_ms > now_ms - self._window_ms:
            self._seen[key] = max(at_ms, self._seen.get(key, at_ms))

    def count(self, now_ms: int) -> int:
        cutoff = now_ms - self._window_ms
        self._seen = {key: at for key, at in self._seen.items() if at > cutoff}
        return len(self._seen)
