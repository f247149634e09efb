"""Python's cyclic garbage collector, set for steno's long-running services.

The defaults suit short scripts: a young collection every 700 net allocations of container
objects, and every tenth one a pass over the middle generation, promoting what is still alive.
A service under load keeps each request's objects alive for milliseconds, across several such
collections, so they are promoted, then walked again by the full collections, which also walk
everything start-up built and never frees (Faust's app, the Cassandra driver, the models) and
what the process keeps for minutes (the API's remembered responses): 65,000-180,000 objects,
37-100 ms a pass. Under the capacity
benchmark's 64-user load the four processes spent 5.7 s of CPU in the collector in 150 s with
the defaults, 1.4 s with these settings (docs/capacity-rounds.md, thirteenth round).

Every steno service calls `tune` first thing and `freeze_startup` once it is set up.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # net allocations between young collections (Python's default: 700)


def tune() -> None:
    """Collect the young generation every YOUNG_THRESHOLD net allocations instead of 700: most of
    a request's objects are then freed before a collection sees them, so fewer are promoted."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def freeze_startup() -> None:
    """Collect what start-up left as garbage, then move everything still alive, which lives as
    long as the process, out of the collector's sight: the full collections skip it from now on."""
    gc.collect()
    gc.freeze()
