"""Fit a conversation into a model's context window, newest turns first.

The prompt is the system prompt, then as many of the most recent earlier turns as fit, then
the new user message, which is always there: if it alone is too long, its beginning is cut,
since the end of a long paste is usually where the question is. Earlier turns are kept whole
or not at all, and only as an unbroken run back from the newest: a turn in the middle of a
conversation makes no sense without the ones after it that refer to it.

Once a chat outgrows the window, keeping as much as fits moves the prompt's start every turn, and
a model's cache of the previous prompt (llama.cpp's KV cache, vLLM's prefix cache) is then no use:
every turn evaluates the whole window again (SmolLM2 on this machine: ~17 s to the first token
instead of ~0.4). So the start is *anchored*: among the user turns that keep at least half the
room, the prompt starts at the one whose content's hash ends in the most zero bits (the oldest of
equals). That turn is a record, so as the chat grows it stays the choice until it no longer fits
(a turn that newly qualifies beats it only rarely); then the start jumps, typically to around the
middle, as llama.cpp's server drops half its context at once. Consecutive prompts share their
start, and the model's cache serves all but the newest turns. Anchors are defined by content, as
in content-defined chunking, so they need no turn numbers or memory (the Redis cache holds the
newest turns only; an OpenAI client sends the chat it likes), and every process, replay and retry
picks the same. The price is context: a prompt keeps between half the room and all that fits.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from schemas.events import ChatTurn
from stream_processors.tokenizers import Tokenizer


class PromptTooSmall(ValueError):
    """Not even the system prompt and an empty message fit: a configuration error."""


@dataclass(frozen=True)
class Prompt:
    turns: list[ChatTurn]
    tokens: int  # exactly as the model will count them, reply primer included


def fit(
    system: ChatTurn,
    earlier: Sequence[ChatTurn],
    new: ChatTurn,
    budget: int,
    tokenizer: Tokenizer,
    anchored: bool = False,
) -> Prompt:
    """The prompt of at most `budget` tokens that ends with (the end of) `new`: the longest, or
    if `anchored`, the one that starts at the anchor (see above) when not all of `earlier` fits."""
    used = tokenizer.reply_primer_tokens + tokenizer.turn_tokens(system)
    new = _fit_turn(new, budget - used, tokenizer)
    used += tokenizer.turn_tokens(new)
    room = budget - used
    costs = _newest_that_fit(earlier, room, tokenizer)
    kept = _anchored(earlier, costs, room) if anchored and len(costs) < len(earlier) else len(costs)
    return Prompt(turns=[system, *earlier[len(earlier) - kept :], new], tokens=used + sum(costs[:kept]))


def _newest_that_fit(earlier: Sequence[ChatTurn], room: int, tokenizer: Tokenizer) -> list[int]:
    """The token costs of the newest turns that fit in `room` together, newest first."""
    costs: list[int] = []
    for turn in reversed(earlier):
        cost = tokenizer.turn_tokens(turn)
        if cost > room:
            break
        costs.append(cost)
        room -= cost
    return costs


def _anchored(earlier: Sequence[ChatTurn], costs: list[int], room: int) -> int:
    """How many of the newest turns to keep: back to the anchor, or all that fit if no user turn
    keeps half the room."""
    kept, total, best = len(costs), 0, -1
    for n, cost in enumerate(costs, 1):
        total += cost
        turn = earlier[-n]
        if turn.role == "user" and total * 2 >= room and (rank := _rank(turn.content)) >= best:
            kept, best = n, rank
    return kept


def _rank(content: str) -> int:
    """The trailing zero bits of a stable hash of the content (not `hash`, which differs between
    processes): half of all turns rank 0, a quarter 1, an eighth 2..."""
    digest = zlib.crc32(content.encode())
    return (digest & -digest).bit_length() - 1 if digest else 32


def _fit_turn(turn: ChatTurn, budget: int, tokenizer: Tokenizer) -> ChatTurn:
    """The turn, or its end cut to fit: a cut can tokenize differently, so each try is re-counted."""
    if tokenizer.turn_tokens(turn) <= budget:
        return turn
    keep = budget - tokenizer.turn_tokens(turn.model_copy(update={"content": ""}))
    while keep > 0:
        cut = turn.model_copy(update={"content": tokenizer.keep_last(turn.content, keep)})
        if tokenizer.turn_tokens(cut) <= budget:
            return cut
        keep -= 1
    raise PromptTooSmall(f"{budget} tokens leave no room for the user's message")
