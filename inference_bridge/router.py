"""Least-busy routing of generations over a fleet of Triton endpoints, sticky per chat.

Generations vary wildly in length, so round-robin would pile new streams onto a server that is
still busy with long ones; counting in-flight streams per endpoint needs no coordination and
adapts at once. Ties go to the endpoint that was chosen least recently, so an idle fleet still
shares the load instead of sending everything to the first endpoint.

A chat's next turn goes to the endpoint that served its last, for the KV cache it holds: its
prompt is the last prompt, the reply and a new message, and a server that keeps its cache (vLLM's
prefix caching, the local `smollm2`'s cache slots) evaluates only the new part there, where any
other server evaluates the whole chat again. A chat is known by its prompt's beginning (the
system prompt and the first turn after it: `chat_key`), the same on every turn while the prompt's
start stays put (context assembly anchors it once a chat outgrows the window), and the same for
an OpenAI client, whose every request is a new steno conversation. Each chat's endpoint is chosen
by rendezvous hashing (the endpoint whose hash with the key is highest), so every bridge picks
the same one with nothing remembered or shared, and adding an endpoint moves only the chats it
wins. It is left for the least busy while it has more than `affinity_slack` streams more than
the least busy (the next one in the chat's order then takes it), so a popular first message
cannot pile onto one server.

An endpoint whose stream broke because the server went away is marked down, and is chosen only
when every endpoint is down, until a readiness probe marks it up again: a generation retried after
a Triton crash goes to another server when the fleet has one.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from schemas.events import ChatTurn

Client = TypeVar("Client")


def chat_key(prompt: Sequence[ChatTurn]) -> bytes:
    """What a chat's prompts share from turn to turn: their first two turns (a stable digest:
    Python's `hash` differs between processes, and every bridge must agree)."""
    beginning = "\x00".join(f"{turn.role}\x00{turn.content}" for turn in prompt[:2])
    return hashlib.blake2b(beginning.encode(), digest_size=16).digest()


@dataclass
class _Endpoint(Generic[Client]):
    client: Client
    url: bytes
    in_flight: int = 0
    last_chosen: int = -1
    down: bool = False

    def rank(self) -> tuple[bool, int, int]:
        return (self.down, self.in_flight, self.last_chosen)

    def weight(self, key: bytes) -> bytes:
        """This endpoint's rendezvous weight for a chat."""
        return hashlib.blake2b(self.url, key=key, digest_size=8).digest()


class LeastBusyRouter(Generic[Client]):
    """Leases one client per generation, from the endpoint with the fewest streams in flight, or
    the chat's own one while it is nearly as free."""

    def __init__(self, clients: Mapping[str, Client], *, affinity_slack: int = 0) -> None:
        if not clients:
            raise ValueError("the router needs at least one endpoint")
        self._endpoints = {url: _Endpoint(client, url.encode()) for url, client in clients.items()}
        self._ticks = itertools.count()
        self._affinity_slack = affinity_slack

    @contextmanager
    def lease(self, chat: bytes | None = None) -> Iterator[Client]:
        """The chosen endpoint's client, counted as busy until the block exits; `chat`: the
        generation's `chat_key`, None for no affinity."""
        endpoint = self._choose(chat)
        endpoint.in_flight += 1
        endpoint.last_chosen = next(self._ticks)
        try:
            yield endpoint.client
        finally:
            endpoint.in_flight -= 1

    def _choose(self, chat: bytes | None) -> _Endpoint[Client]:
        least_busy = min(self._endpoints.values(), key=_Endpoint.rank)
        if chat is None or len(self._endpoints) == 1:
            return least_busy
        nearly_free = [e for e in self._endpoints.values() if self._nearly_free(e, least_busy)]
        return max(nearly_free, key=lambda endpoint: endpoint.weight(chat), default=least_busy)

    def _nearly_free(self, endpoint: _Endpoint[Client], least_busy: _Endpoint[Client]) -> bool:
        return not endpoint.down and endpoint.in_flight <= least_busy.in_flight + self._affinity_slack

    def in_flight(self) -> dict[str, int]:
        """Streams in flight per endpoint URL, for logs and tests."""
        return {url: endpoint.in_flight for url, endpoint in self._endpoints.items()}

    def clients(self) -> list[Client]:
        """Every endpoint's client, the one a lease would choose first, first."""
        return [endpoint.client for endpoint in sorted(self._endpoints.values(), key=_Endpoint.rank)]

    def mark(self, client: Client, *, down: bool) -> None:
        """Record whether the endpoint of `client` is down (its server unreachable) or up again."""
        for endpoint in self._endpoints.values():
            if endpoint.client is client:
                endpoint.down = down
