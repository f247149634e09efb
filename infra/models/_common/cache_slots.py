"""Model instances that each keep the chat they served last in their KV cache, leased to the
conversation whose chat they already hold.

Why: a conversation's next prompt is its last prompt, the reply, and a new message, and a model
that keeps its KV cache (llama.cpp does) evaluates only what the cache does not already hold.
On SmolLM2 here a 10-exchange chat costs seconds of CPU to evaluate from scratch, its new
message tens of milliseconds. A plain queue of instances hands a conversation's turns to
different instances in turn, each one or more turns behind. With more slots than generations at
once, that many conversations keep their caches between turns; a new one takes the slot used
least recently.

The choice only decides speed: the model compares tokens itself and evaluates whatever it does
not hold, so a wrong guess (a reply recorded differently, a context window that moved) costs
time, never a different answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

Chat = list[dict[str, str]]  # {"role", "content"} messages, as chat templates take them
M = TypeVar("M")


class CacheSlots(Generic[M]):
    """`size` model instances, each used by one generation at a time (one llama.cpp context
    shared by concurrent generations crashes it: GGML_ASSERT(logits != nullptr))."""

    def __init__(self, make: Callable[[], M], size: int) -> None:
        self._models = [make() for _ in range(size)]
        self._chats: list[Chat] = [[] for _ in range(size)]  # what each slot's cache holds, as a chat
        self._used = [0] * size  # when each slot was last released, on a counter
        self._busy = [False] * size
        self._clock = 0
        self._free = threading.Condition()

    @contextmanager
    def lease(self, chat: Chat) -> Iterator[tuple[M, Chat]]:
        """A slot for `chat` (waiting while all are busy): its model, and a copy of the chat to
        extend with the reply; the slot then remembers it as the chat its cache holds."""
        with self._free:
            self._free.wait_for(lambda: not all(self._busy))
            slot = choose(chat, self._chats, self._used, self._busy)
            self._busy[slot] = True
        served = list(chat)
        try:
            yield self._models[slot], served
        finally:
            with self._free:
                self._clock += 1
                self._chats[slot], self._used[slot], self._busy[slot] = served, self._clock, False
                self._free.notify()


def choose(chat: Chat, chats: Sequence[Chat], used: Sequence[int], busy: Sequence[bool]) -> int:
    """The free slot that holds the most of this conversation; the one used least recently when
    none holds any of it (a slot that shares only the system prompt holds another conversation,
    whose cache is worth more than the few tokens it would save)."""
    free = [slot for slot in range(len(chats)) if not busy[slot]]
    return max(free, key=lambda slot: (same_conversation(chat, chats[slot]), -used[slot]))


def same_conversation(chat: Chat, other: Chat) -> int:
    """How many messages the two chats share from their start, if that is more than system
    messages; otherwise 0."""
    shared = 0
    for mine, theirs in zip(chat, other, strict=False):
        if mine != theirs:
            break
        shared += 1
    return shared if any(message["role"] != "system" for message in chat[:shared]) else 0
