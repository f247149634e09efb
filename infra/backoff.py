"""How every retry in steno spaces its tries: waits that double, up to a ceiling.

A broker or store that is restarting is asked again soon, so a short blip costs little; one that
stays away is asked ever less often, so a long outage floods neither its log nor ours. Each retry
loop takes its waits from here rather than doubling a variable of its own.
"""

from __future__ import annotations

from collections.abc import Iterator


def doubling(first_s: float, most_s: float) -> Iterator[float]:
    """`first_s`, twice that, four times that, ... then `most_s` for ever."""
    wait = first_s
    while True:
        yield wait
        wait = min(wait * 2, most_s)
