"""Cancels that arrived before the request they cancel.

The control topic and the inference-request topic are read independently, so a user who stops a
reply quickly can have their cancel read before the bridge consumes the request (or before a
crashed bridge's request is redelivered). The bridge remembers such cancels for a while and
applies them when the request shows up. Memory is bounded in both time and size: a cancel for a
request this instance never receives (another instance owns its partition) must not pile up.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class PendingCancels:
    """Response ids cancelled recently, forgotten after `ttl_s` or when over `capacity`."""

    def __init__(self, ttl_s: float, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._capacity = capacity
        self._clock = clock
        self._expiries: OrderedDict[str, float] = OrderedDict()  # oldest first

    def add(self, response_id: str) -> None:
        self._expiries.pop(response_id, None)
        self._expiries[response_id] = self._clock() + self._ttl_s
        while len(self._expiries) > self._capacity:
            self._expiries.popitem(last=False)
        self._expire()

    def take(self, response_id: str) -> bool:
        """Whether the response was cancelled; a cancel is applied once, then forgotten."""
        self._expire()
        return self._expiries.pop(response_id, None) is not None

    def __len__(self) -> int:
        self._expire()
        return len(self._expiries)

    def _expire(self) -> None:
        now = self._clock()
        while self._expiries and next(iter(self._expiries.values())) <= now:
            self._expiries.popitem(last=False)
