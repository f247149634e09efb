"""A reply's stream as a client times it: time to first token, the gaps between tokens, and the
percentiles the benchmarks report them by."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any


@dataclass
class Stream:
    ttft_s: float
    gaps_s: list[float]
    tokens: int


def percentile(values: list[float], p: int) -> float:
    """The p-th percentile (inclusive method); a single sample is every percentile of itself."""
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else values[0]


async def timed(chunks: AsyncIterable[Any], started: float) -> Stream:
    """Read `chunks` to the end, each one a token's arrival, timed from `started` (perf_counter)."""
    arrivals = [time.perf_counter() async for _ in chunks]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    return Stream(ttft_s=arrivals[0] - started, gaps_s=gaps, tokens=len(arrivals))
