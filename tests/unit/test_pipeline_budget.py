"""The pipeline benchmark's CPU budget: what steno may spend a reply for a target ratio."""

from __future__ import annotations

import pytest

from benchmarks import pipeline
from benchmarks.pipeline import Run, compare, steno_cpu_budget_ms
from benchmarks.streams import Stream


def a_run(concurrency: int, replies: int, wall_s: float, cpu_s: dict[str, float]) -> Run:
    streams = [Stream(ttft_s=0.02, gaps_s=[0.01], tokens=2) for _ in range(replies)]
    return Run(concurrency, streams, wall_s, cpu_s)


@pytest.fixture(autouse=True)
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "CORES", 2)


def test_the_budget_is_the_cores_time_a_reply_at_the_target_rate_less_what_the_rest_spent() -> None:
    """Direct: 100 replies/s. At 0.8 of that, 80 replies/s on two cores leave 25 ms a reply, of
    which Triton, the client and the rest took 10 + 4 + 1 in steno's run: steno may spend 10."""
    direct = a_run(100, replies=500, wall_s=5.0, cpu_s={"triton": 9.0})
    steno = a_run(100, replies=500, wall_s=9.0, cpu_s={"triton": 5.0, "client": 2.0, "other": 0.5, "api": 7.0})
    assert steno_cpu_budget_ms(direct, steno, 0.8) == pytest.approx(10.0)


def test_a_budget_below_zero_says_no_steno_could_reach_the_ratio() -> None:
    """The rest of the machine alone took more than the cores hold at that rate."""
    direct = a_run(100, replies=500, wall_s=5.0, cpu_s={"triton": 9.0})
    steno = a_run(100, replies=500, wall_s=9.0, cpu_s={"triton": 15.0, "api": 7.0})
    assert steno_cpu_budget_ms(direct, steno, 0.8) < 0


def test_only_levels_with_a_target_get_a_budget() -> None:
    def row(concurrency: int) -> dict[str, float]:
        direct = a_run(concurrency, replies=10, wall_s=1.0, cpu_s={"triton": 0.1})
        steno = a_run(concurrency, replies=10, wall_s=1.2, cpu_s={"triton": 0.1, "api": 0.2})
        return compare(direct, steno)

    assert "steno_cpu_budget_ms_per_reply" not in row(1)
    assert row(10)["target_ratio"] == 0.9
    assert row(100)["target_ratio"] == 0.8
