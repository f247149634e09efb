"""Least-busy routing of generations over a fleet of Triton endpoints, sticky per conversation.

Generations vary wildly in length, so round-robin would pile new streams onto a server that is
still busy with long ones; counting in-flight streams per endpoint needs no coordination and
adapts at once. Ties go to the endpoint that was chosen least recently, so an idle fleet still
shares the load instead of sending everything to the first endpoint.

A conversation's next turn goes back to the endpoint that served its last one while that one is
no more than `affinity_slack` streams busier than the least busy: its prompt is the last prompt,
the reply and a new message, and a server that keeps its KV cache (vLLM's prefix caching, the
local `smollm2`'s cache slots) evaluates only the new part there, where any other server
evaluates the whole chat again. A conversation's requests share a partition, so one bridge
sees all of them; it remembers the last endpoint of `remembered` conversations.

An endpoint whose stream broke because the server went away is marked down, and is chosen only
when every endpoint is down, until a readiness probe marks it up again: a generation retried after
a Triton crash goes to another server when the fleet has one.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

Client = TypeVar("Client")


@dataclass
class _Endpoint(Generic[Client]):
    client: Client
    in_flight: int = 0
    last_chosen: int = -1
    down: bool = False

    def rank(self) -> tuple[bool, int, int]:
        return (self.down, self.in_flight, self.last_chosen)


class LeastBusyRouter(Generic[Client]):
    """Leases one client per generation, from the endpoint with the fewest streams in flight, or
    the conversation's last one while it is nearly as free."""

    def __init__(self, clients: Mapping[str, Client], *, affinity_slack: int = 0, remembered: int = 0) -> None:
        if not clients:
            raise ValueError("the router needs at least one endpoint")
        self._endpoints = {url: _Endpoint(client) for url, client in clients.items()}
        self._ticks = itertools.count()
        self._affinity_slack = affinity_slack
        self._remembered = remembered
        self._last_served: OrderedDict[str, _Endpoint[Client]] = OrderedDict()  # by conversation, oldest first

    @contextmanager
    def lease(self, conversation_id: str | None = None) -> Iterator[Client]:
        """The chosen endpoint's client, counted as busy until the block exits."""
        endpoint = self._choose(conversation_id)
        endpoint.in_flight += 1
        endpoint.last_chosen = next(self._ticks)
        try:
            yield endpoint.client
        finally:
            endpoint.in_flight -= 1

    def _choose(self, conversation_id: str | None) -> _Endpoint[Client]:
        least_busy = min(self._endpoints.values(), key=_Endpoint.rank)
        if conversation_id is None or not self._remembered:
            return least_busy
        last = self._last_served.pop(conversation_id, None)
        chosen = last if last is not None and self._nearly_free(last, least_busy) else least_busy
        self._last_served[conversation_id] = chosen
        if len(self._last_served) > self._remembered:
            self._last_served.popitem(last=False)
        return chosen

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
