"""The chaos suite's judge: what clients saw, held against what the log and the history hold.

Pure logic over recorded observations, in the manner of Jepsen's queue checkers and Kafka's
own system tests (acknowledged ⊆ persisted, nothing twice in the sink):

- every message the API acknowledged has exactly one terminal outcome (0 lost, 0 doubled), and
  it and its conversation are in its client's history once, though sent again after a 503 or a drop;
- every client's final text equals history's text for that response (0 garbled);
- every stream, across its reconnections, delivered exactly the response's events: on the
  native API the SSE ids are log positions, judged against the response's events in the token
  topic (consecutive events of one response are not consecutive offsets); on the Responses API
  the sequence numbers must run 0, 1, 2, ... to the ending (0 gaps, 0 duplicates).

It never waits and never talks to a server: `tests/unit/test_chaos_checker.py` feeds it
hand-made histories to show it catches each kind of failure.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

Api = Literal["native", "responses", "chat"]

# How each API's stream says it is over (native SSE event names; Responses event types).
NATIVE_ENDINGS = frozenset({"done", "error", "blocked"})
RESPONSES_ENDINGS = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})
FINAL_STATUSES = frozenset({"completed", "blocked", "failed", "cancelled"})
# Token-topic events a native client is sent (ResponseStarted is bookkeeping, never sent).
CLIENT_VISIBLE = frozenset({"TokenGenerated", "ResponseRestarted", "ResponseEnded"})
TERMINAL_EVENTS = frozenset({"ResponseCompleted", "ResponseFailed", "ResponseCancelled", "MessageBlocked"})


@dataclass(frozen=True)
class Received:
    """One event as a client read it off the wire."""

    connection: int  # 0 for the first stream, then one more per reconnection
    at: float  # monotonic seconds
    kind: str  # native: token/restart/done/error/blocked; Responses: the event type; chat: delta/finish
    position: int | None = None  # native: the SSE id (a log offset); Responses: sequence_number
    text: str = ""  # the text this event adds (a token, a delta)


@dataclass
class Exchange:
    """One message the API acknowledged, and everything its client saw of the reply."""

    api: Api
    response_id: str  # steno's id (without `resp_` / `chatcmpl-`)
    acked_at: float
    received: list[Received] = field(default_factory=list)
    finished: bool = False  # the client read the stream's ending
    cut: bool = False  # a stream that cannot be resumed (chat completions) broke before its end
    expected: frozenset[str] = frozenset({"completed"})  # outcomes this message may end with
    connections: int = 1  # streams opened for the reply, reconnections included

    def last_position(self) -> int | None:
        positions = [r.position for r in self.received if r.position is not None]
        return positions[-1] if positions else None


@dataclass(frozen=True)
class Logged:
    """One event of the response in the log: its offset in its partition of the topic."""

    offset: int
    type: str  # the event class name: TokenGenerated, ResponseEnded, ResponseCompleted, ...
    text: str = ""


@dataclass(frozen=True)
class Stored:
    """The response's row in the history view."""

    status: str
    content: str


@dataclass
class Verdict:
    """What went wrong with one exchange; all zero / False when the promise held."""

    response_id: str
    api: Api
    lost: bool = False
    doubled: bool = False
    gaps: int = 0
    duplicates: int = 0
    garbled: bool = False
    unexpected_outcome: bool = False
    stalled: bool = False  # a resumable stream that never reached its ending
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Held:
    """What the client's history holds. It asked for one conversation and one message in it, maybe
    more than once: a send again after a 503 or a drop must not double either."""

    conversations: int = 1
    messages: int = 1


def judge(
    exchange: Exchange, tokens: list[Logged], terminals: list[Logged], rows: list[Stored], held: Held = Held()
) -> Verdict:
    """One exchange against its response's token-topic events, its terminal events on the
    conversation topic, its history rows and what its client's history holds."""
    verdict = Verdict(exchange.response_id, exchange.api)
    _judge_outcome(verdict, exchange, tokens, terminals, rows)
    if held.conversations > 1 or held.messages > 1:
        verdict.doubled = True
        verdict.problems.append(
            f"the client asked for one conversation and one message; its history holds {held.conversations} "
            f"and {held.messages}"
        )
    if exchange.api == "native":
        _judge_native_positions(verdict, exchange, tokens)
    elif exchange.api == "responses":
        _judge_sequence_numbers(verdict, exchange)
    if not exchange.finished and not exchange.cut:
        verdict.stalled = True
        verdict.problems.append(f"the client's stream never reached its ending ({exchange.connections} connections)")
    if len(rows) == 1 and rows[0].status in FINAL_STATUSES:
        _judge_text(verdict, exchange, rows[0].content)
    return verdict


def client_text(exchange: Exchange) -> str:
    """The reply as the client shows it; a native `restart` discards what came before."""
    text = ""
    for event in exchange.received:
        if event.kind == "restart":
            text = ""
        else:
            text += event.text
    return text


def _judge_outcome(
    verdict: Verdict, exchange: Exchange, tokens: list[Logged], terminals: list[Logged], rows: list[Stored]
) -> None:
    endings = sum(1 for t in tokens if t.type == "ResponseEnded")
    if not terminals or not endings or not rows or any(r.status not in FINAL_STATUSES for r in rows):
        verdict.lost = True
        statuses = [r.status for r in rows]
        verdict.problems.append(
            f"no outcome: {len(terminals)} terminal events, {endings} ResponseEnded, history {statuses}"
        )
        return
    if len(terminals) > 1 or endings > 1 or len(rows) > 1:
        verdict.doubled = True
        verdict.problems.append(
            f"{len(terminals)} terminal events ({[t.type for t in terminals]}), {endings} ResponseEnded, "
            f"{len(rows)} history rows"
        )
    if rows[0].status not in exchange.expected:
        verdict.unexpected_outcome = True
        verdict.problems.append(f"ended {rows[0].status!r}, expected one of {sorted(exchange.expected)}")


def _judge_native_positions(verdict: Verdict, exchange: Exchange, tokens: list[Logged]) -> None:
    """SSE ids against the response's client-visible events in the log."""
    logged = {t.offset: t for t in tokens if t.type in CLIENT_VISIBLE}
    seen = [r.position for r in exchange.received if r.position is not None]
    verdict.duplicates = sum(n - 1 for n in Counter(seen).values())
    if verdict.duplicates:
        verdict.problems.append(f"{verdict.duplicates} events delivered twice")
    foreign = [p for p in seen if p not in logged]
    if foreign:
        verdict.garbled = True
        verdict.problems.append(f"ids that are no event of this response: {foreign[:5]}")
    if seen != sorted(seen):
        verdict.garbled = True
        verdict.problems.append("events delivered out of log order")
    reach = max(logged) if exchange.finished and logged else max(seen, default=-1)
    missing = sorted({o for o in logged if o <= reach} - set(seen))
    verdict.gaps = len(missing)
    if missing:
        verdict.problems.append(f"{len(missing)} events never delivered, at log offsets {missing[:5]}")
    for event in exchange.received:
        if event.kind == "token" and event.position in logged and logged[event.position].text != event.text:
            verdict.garbled = True
            verdict.problems.append(f"token at {event.position} is {event.text!r}, the log has it as another text")
            break


def _judge_sequence_numbers(verdict: Verdict, exchange: Exchange) -> None:
    """Responses API events are numbered from 0 without holes, across every resumption."""
    seen = [r.position for r in exchange.received if r.position is not None]
    verdict.duplicates = sum(n - 1 for n in Counter(seen).values())
    if verdict.duplicates:
        verdict.problems.append(f"{verdict.duplicates} sequence numbers delivered twice")
    missing = sorted(set(range(max(seen, default=-1) + 1)) - set(seen))
    verdict.gaps = len(missing)
    if missing:
        verdict.problems.append(f"{len(missing)} sequence numbers never delivered: {missing[:5]}")
    if seen != sorted(seen):
        verdict.garbled = True
        verdict.problems.append("sequence numbers out of order")


def _judge_text(verdict: Verdict, exchange: Exchange, stored: str) -> None:
    text = client_text(exchange)
    if exchange.finished and text != stored:
        verdict.garbled = True
        verdict.problems.append(f"client text ({len(text)} chars) is not history's ({len(stored)} chars)")
    elif not exchange.finished and not stored.startswith(text):
        verdict.garbled = True
        verdict.problems.append(f"the cut stream's text ({len(text)} chars) is no prefix of history's")


def resume_delays(exchanges: list[Exchange], fault_at: float) -> list[float]:
    """For each stream that was mid-reply when the fault struck: seconds until its next event."""
    delays = []
    for exchange in exchanges:
        before = [r for r in exchange.received if r.at <= fault_at]
        after = [r for r in exchange.received if r.at > fault_at]
        if before and after and before[-1].kind not in NATIVE_ENDINGS | RESPONSES_ENDINGS | {"finish"}:
            delays.append(after[0].at - fault_at)
    return delays


@dataclass
class Tally:
    """One fault's line of the table."""

    fault: str
    messages: int
    lost: int
    doubled: int
    gaps: int
    duplicates: int
    garbled: int
    not_completed: int
    stalled: int
    resume_p50_s: float | None
    resume_max_s: float | None
    answered_again_s: float | None

    @classmethod
    def of(cls, fault: str, verdicts: list[Verdict], delays: list[float], answered_again_s: float | None) -> Tally:
        return cls(
            fault=fault,
            messages=len(verdicts),
            lost=sum(v.lost for v in verdicts),
            doubled=sum(v.doubled for v in verdicts),
            gaps=sum(v.gaps for v in verdicts),
            duplicates=sum(v.duplicates for v in verdicts),
            garbled=sum(v.garbled for v in verdicts),
            not_completed=sum(v.unexpected_outcome for v in verdicts),
            stalled=sum(v.stalled for v in verdicts),
            resume_p50_s=round(statistics.median(delays), 2) if delays else None,
            resume_max_s=round(max(delays), 2) if delays else None,
            answered_again_s=None if answered_again_s is None else round(answered_again_s, 2),
        )


TABLE_HEADER = (
    "| fault | messages | lost | doubled | gaps | dup events | garbled | not completed | stalled "
    "| resume p50 / max (s) | new message answered after (s) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def table(tallies: list[Tally]) -> str:
    """The Markdown table the suite prints and the README keeps."""

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = [TABLE_HEADER]
    for t in tallies:
        lines.append(
            f"| {t.fault} | {t.messages} | {t.lost} | {t.doubled} | {t.gaps} | {t.duplicates} | {t.garbled} "
            f"| {t.not_completed} | {t.stalled} | {seconds(t.resume_p50_s)} / {seconds(t.resume_max_s)} "
            f"| {seconds(t.answered_again_s)} |"
        )
    return "\n".join(lines)
