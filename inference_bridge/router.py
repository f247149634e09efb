"""Least-busy routing of generations over a fleet of Triton endpoints.

Generations vary wildly in length, so round-robin would pile new streams onto a server that is
still busy with long ones; counting in-flight streams per endpoint needs no coordination and
adapts at once. Ties go to the endpoint that was chosen least recently, so an idle fleet still
shares the load instead of sending everything to the first endpoint.

An endpoint whose stream broke because the server went away is marked down, and is chosen only
when every endpoint is down, until a readiness probe marks it up again: a generation retried after
a Triton crash goes to another server when the fleet has one.
"""

from __future__ import annotations

import itertools
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
    """Leases one client per generation, from the endpoint with the fewest streams in flight."""

    def __init__(self, clients: Mapping[str, Client]) -> None:
        if not clients:
            raise ValueError("the router needs at least one endpoint")
        self._endpoints = {url: _Endpoint(client) for url, client in clients.items()}
        self._ticks = itertools.count()

    @contextmanager
    def lease(self) -> Iterator[Client]:
        """The least-busy endpoint's client, counted as busy until the block exits."""
        endpoint = min(self._endpoints.values(), key=_Endpoint.rank)
        endpoint.in_flight += 1
        endpoint.last_chosen = next(self._ticks)
        try:
            yield endpoint.client
        finally:
            endpoint.in_flight -= 1

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
