"""The chaos suite's checker catches each way a reply can go wrong: hand-made histories, one
flaw each, against a clean one that passes."""

from __future__ import annotations

from tests.chaos.checker import Exchange, Held, Logged, Received, Stored, Tally, judge, resume_delays, table

# A native reply "ab c" of three tokens, interleaved in its partition with other responses' events.
TOKENS = [
    Logged(10, "ResponseStarted"),
    Logged(12, "TokenGenerated", "ab "),
    Logged(15, "TokenGenerated", "c"),
    Logged(16, "TokenGenerated", "!"),
    Logged(19, "ResponseEnded"),
]
TERMINAL = [Logged(40, "ResponseCompleted")]
STORED = [Stored("completed", "ab c!")]


def native(*events: tuple[int, int, str, str], finished: bool = True) -> Exchange:
    """(connection, position, kind, text) per event, in the order the client read them."""
    received = [Received(c, float(i), kind, position, text) for i, (c, position, kind, text) in enumerate(events)]
    return Exchange("native", "r1", 0.0, received, finished=finished)


CLEAN = [(0, 12, "token", "ab "), (0, 15, "token", "c"), (1, 16, "token", "!"), (1, 19, "done", "")]


def test_a_reply_resumed_exactly_passes() -> None:
    verdict = judge(native(*CLEAN), TOKENS, TERMINAL, STORED)

    assert verdict.ok, verdict.problems


def test_a_message_without_an_outcome_is_lost() -> None:
    pending = judge(native(*CLEAN), TOKENS, [], [Stored("pending", "ab c!")])
    missing = judge(native(*CLEAN[:2], finished=False), TOKENS[:3], [], [])

    assert pending.lost and missing.lost


def test_two_outcomes_are_a_doubled_message() -> None:
    twice_ended = [*TOKENS, Logged(25, "ResponseEnded")]
    two_terminals = [*TERMINAL, Logged(44, "ResponseFailed")]

    assert judge(native(*CLEAN), twice_ended, TERMINAL, STORED).doubled
    assert judge(native(*CLEAN), TOKENS, two_terminals, STORED).doubled


def test_a_conversation_or_message_sent_again_and_stored_twice_is_doubled() -> None:
    """The reply judged alone is fine; the client's history holds its one chat or message twice."""
    assert not judge(native(*CLEAN), TOKENS, TERMINAL, STORED, Held(1, 1)).problems
    for held in (Held(2, 1), Held(1, 2)):
        verdict = judge(native(*CLEAN), TOKENS, TERMINAL, STORED, held)
        assert verdict.doubled
        assert verdict.problems == [
            f"the client asked for one conversation and one message; its history holds {held.conversations} "
            f"and {held.messages}"
        ]


def test_an_event_skipped_on_resume_is_a_gap() -> None:
    skipped = [(0, 12, "token", "ab "), (1, 16, "token", "!"), (1, 19, "done", "")]

    verdict = judge(native(*skipped), TOKENS, TERMINAL, STORED)

    assert verdict.gaps == 1 and verdict.garbled  # the text lacks "c" too
    assert "15" in " ".join(verdict.problems)


def test_an_event_sent_again_on_resume_is_a_duplicate() -> None:
    again = [(0, 12, "token", "ab "), (0, 15, "token", "c"), (1, 15, "token", "c"), *CLEAN[2:]]

    verdict = judge(native(*again), TOKENS, TERMINAL, STORED)

    assert verdict.duplicates == 1 and not verdict.ok


def test_text_unlike_historys_is_garbled() -> None:
    verdict = judge(native(*CLEAN), TOKENS, TERMINAL, [Stored("completed", "ab c?")])

    assert verdict.garbled and verdict.gaps == 0 and verdict.duplicates == 0


def test_a_token_whose_text_is_not_the_logs_is_garbled() -> None:
    wrong = [(0, 12, "token", "ab "), (0, 15, "token", "X"), *CLEAN[2:]]

    assert judge(native(*wrong), TOKENS, TERMINAL, [Stored("completed", "ab X!")]).garbled


def test_a_restart_discards_the_text_before_it() -> None:
    tokens = [
        Logged(12, "TokenGenerated", "ab "),
        Logged(14, "ResponseRestarted"),
        Logged(15, "TokenGenerated", "ab "),
        Logged(16, "TokenGenerated", "c!"),
        Logged(19, "ResponseEnded"),
    ]
    seen = [(0, 12, "token", "ab "), (1, 14, "restart", ""), (1, 15, "token", "ab "), (1, 16, "token", "c!")]

    verdict = judge(native(*seen, (1, 19, "done", "")), tokens, TERMINAL, STORED)

    assert verdict.ok, verdict.problems


def test_a_failed_reply_of_a_message_that_should_complete_is_reported() -> None:
    verdict = judge(native(*CLEAN), TOKENS, [Logged(40, "ResponseFailed")], [Stored("failed", "ab c!")])

    assert verdict.unexpected_outcome and not verdict.lost


def test_a_resumable_stream_that_never_ends_is_stalled() -> None:
    verdict = judge(native(*CLEAN[:2], finished=False), TOKENS, TERMINAL, STORED)

    assert verdict.stalled and verdict.gaps == 0  # what it got so far was exact


def responses(*positions: int, texts: dict[int, str] | None = None) -> Exchange:
    received = [
        Received(0, float(p), "response.output_text.delta", p, (texts or {}).get(p, "")) for p in positions[:-1]
    ] + [Received(1, 99.0, "response.completed", positions[-1])]
    return Exchange("responses", "r1", 0.0, received, finished=True)


def test_responses_sequence_numbers_must_run_without_holes_or_repeats() -> None:
    texts = {3: "ab ", 4: "c!"}
    clean = judge(responses(0, 1, 2, 3, 4, 5, texts=texts), TOKENS, TERMINAL, STORED)
    hole = judge(responses(0, 1, 2, 4, 5, texts={4: "ab c!"}), TOKENS, TERMINAL, STORED)
    repeat = judge(responses(0, 1, 2, 3, 3, 4, 5, texts=texts), TOKENS, TERMINAL, STORED)

    assert clean.ok, clean.problems
    assert hole.gaps == 1 and not hole.garbled
    assert repeat.duplicates == 1 and repeat.garbled  # "ab " twice


def test_a_cut_chat_stream_must_be_a_prefix_of_the_reply() -> None:
    def chat(text: str) -> Exchange:
        received = [Received(0, 0.0, "delta", None, text)]
        return Exchange("chat", "r1", 0.0, received, cut=True, expected=frozenset({"completed", "cancelled"}))

    assert judge(chat("ab "), TOKENS, TERMINAL, STORED).ok
    assert judge(chat("ab X"), TOKENS, TERMINAL, STORED).garbled


def test_resume_delay_counts_streams_in_flight_at_the_fault() -> None:
    in_flight = native((0, 12, "token", "a"), (0, 15, "token", "b"), (1, 16, "token", "c"))  # at 0.0, 1.0, 2.0
    finished_before = native((0, 12, "token", "a"), (0, 19, "done", ""), (1, 19, "done", ""))

    assert resume_delays([in_flight, finished_before], fault_at=1.5) == [0.5]


def test_the_table_has_a_line_per_fault() -> None:
    bad = judge(native(*CLEAN[:1], (1, 16, "token", "!"), (1, 19, "done", "")), TOKENS, TERMINAL, STORED)
    tally = Tally.of("kill -9 api", [bad, judge(native(*CLEAN), TOKENS, TERMINAL, STORED)], [0.4, 1.2], 3.0)

    assert (tally.messages, tally.gaps, tally.garbled, tally.resume_max_s) == (2, 1, 1, 1.2)
    assert table([tally]).splitlines()[-1] == "| kill -9 api | 2 | 0 | 0 | 1 | 0 | 1 | 0 | 0 | 0.8 / 1.2 | 3.0 |"
