"""Fit a conversation into a model's context window, newest turns first.

The prompt is the system prompt, then as many of the most recent earlier turns as fit, then
the new user message, which is always there: if it alone is too long, its beginning is cut,
since the end of a long paste is usually where the question is. Earlier turns are kept whole
or not at all, and only as an unbroken run back from the newest: a turn in the middle of a
conversation makes no sense without the ones after it that refer to it.
"""

from __future__ import annotations

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
) -> Prompt:
    """The longest prompt of at most `budget` tokens that ends with (the end of) `new`."""
    used = tokenizer.reply_primer_tokens + tokenizer.turn_tokens(system)
    new = _fit_turn(new, budget - used, tokenizer)
    used += tokenizer.turn_tokens(new)
    kept: list[ChatTurn] = []
    for turn in reversed(earlier):
        cost = tokenizer.turn_tokens(turn)
        if used + cost > budget:
            break
        kept.append(turn)
        used += cost
    return Prompt(turns=[system, *reversed(kept), new], tokens=used)


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
