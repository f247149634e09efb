"""Which failures say that a store cannot be reached, rather than that it refused what was asked.

Every component that reads or writes the stores must tell the two apart the same way (rule 7):
a store that cannot be reached says nothing about the event, so the step waits for the store and
runs again; any other failure is the event's, and the event goes to the dead letters. So the
distinction is defined once, here beside the store clients, not by one component for the others.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import redis.exceptions
from cassandra import OperationTimedOut, Timeout, Unavailable
from cassandra.cluster import NoHostAvailable

# Cassandra cannot be reached: nothing to say about the event, the whole batch can be applied again.
CASSANDRA_UNAVAILABLE: tuple[type[Exception], ...] = (NoHostAvailable, OperationTimedOut, Unavailable, Timeout)

STORE_UNAVAILABLE: tuple[type[Exception], ...] = (
    *CASSANDRA_UNAVAILABLE,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class StoreWaits:
    """When this process last waited on a store: one it could not reach, or a view not yet holding
    what it needs. A consumer retrying a record meanwhile reads nothing, and that is waiting, not a
    wedge: the watchdog that restarts a consumer holding records it does not read
    (`infra.membership`) asks this first."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self.last = -math.inf

    def waiting(self) -> None:
        """Note that the process waits on a store just now (each retry of a wait loop says so)."""
        self.last = self._now()


STORE_WAITS = StoreWaits()
