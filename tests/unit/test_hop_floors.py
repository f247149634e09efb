"""The hops benchmark's floors: each hop of a message's path beside the round trips it is made of."""

from __future__ import annotations

import pytest

from benchmarks.floors import PATH, SEND, Floors, Hop, path_rows, path_table, steno_and_floor

FLOORS = Floors(kafka_hop_ms=0.8, kafka_ack_ms=0.5, redis_ms=0.2, http_ms=1.0)


def a_timeline(offset_ms: float = 0.0) -> dict[str, float]:
    return {
        "MessageSubmitted": 2.0 + offset_ms,
        "MessageAccepted": 6.0 + offset_ms,
        "InferenceRequested": 9.0 + offset_ms,
        "ResponseStarted": 14.0 + offset_ms,
        "TokenGenerated": 17.0 + offset_ms,
        "client: first token": 19.0 + offset_ms,
    }


def test_each_hop_is_its_mean_time_beside_its_floor() -> None:
    rows = path_rows([a_timeline(), a_timeline(offset_ms=1.0)], FLOORS)
    by_end = {row.hop.end: row for row in rows}
    assert by_end["MessageSubmitted"].steno_ms == pytest.approx(2.5)  # from the send: 2.0 and 3.0
    assert by_end["MessageSubmitted"].floor_ms == pytest.approx(0.5)  # half an HTTP round trip
    assert by_end["MessageAccepted"].steno_ms == pytest.approx(4.0)
    assert by_end["MessageAccepted"].floor_ms == pytest.approx(0.8)
    assert by_end["InferenceRequested"].floor_ms == pytest.approx(0.5)  # the ack outlasts the Redis read
    assert by_end["ResponseStarted"].floor_ms == pytest.approx(1.0)  # a Kafka hop, then Redis
    assert by_end["TokenGenerated"].floor_ms is None  # the model's, not steno's
    assert by_end["client: first token"].floor_ms == pytest.approx(1.3)
    assert all(row.exchanges == 2 for row in rows)


def test_the_total_is_steno_s_hops_only_and_the_model_s_time_is_left_out() -> None:
    rows = path_rows([a_timeline()], FLOORS)
    steno, floor = steno_and_floor(rows)
    assert steno == pytest.approx(19.0 - 3.0)  # the first token, less the model's 3 ms
    assert floor == pytest.approx(0.5 + 0.8 + 0.5 + 1.0 + 1.3)
    assert "| **steno's hops** | **16.0** | **4.1** | **11.9** | | |" in path_table(rows, FLOORS)


def test_an_exchange_without_a_hop_s_ends_does_not_count_for_it() -> None:
    """A blocked message has no inference request: its hops after moderation are not timed."""
    blocked = {"MessageSubmitted": 3.0, "client: first token": 9.0}
    rows = path_rows([a_timeline(), blocked], FLOORS)
    by_end = {row.hop.end: row for row in rows}
    assert by_end["MessageSubmitted"].exchanges == 2
    assert by_end["MessageAccepted"].exchanges == 1
    assert by_end["client: first token"].exchanges == 1  # its start, TokenGenerated, is missing


def test_a_hop_no_exchange_has_is_left_out() -> None:
    path = [*PATH, Hop(SEND, "ConversationStarted", lambda f: f.http_ms, "an HTTP round trip")]
    assert "ConversationStarted" not in {row.hop.end for row in path_rows([a_timeline()], FLOORS, path)}
