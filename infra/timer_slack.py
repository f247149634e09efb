"""`python -m infra.timer_slack NS COMMAND...`: run COMMAND with a timer slack of NS nanoseconds.

The timer slack is how late the kernel may wake a thread from a timed sleep, so that it can serve
several wake-ups at once; every thread the command starts inherits it. Cassandra needs this:
after each task, the workers of its shared executor pool (`SEPWorker`) park for 10 µs to 1 ms at
a time while they wait for more work, for up to ~10 ms, and a steady trickle of requests (one
every few milliseconds) keeps them at it without end: each wake-up is a system call, and on two
cores they cost more CPU than the requests themselves. With 500 µs of slack instead of Linux's
50 µs, Cassandra's CPU per message fell from 3.5-4.4 to 1.6-2.0 ms (README "Capacity"). Work
that arrives wakes a worker at once as before; only a worker that is spinning for work may find
it up to the slack later. systemd's `TimerSlackNSec=` sets the same for a unit.
"""

from __future__ import annotations

import ctypes
import os
import sys

PR_SET_TIMERSLACK = 29  # prctl(2)


def set_timer_slack(nanoseconds: int) -> None:
    """For the calling thread, and so for whatever it starts or `exec`s next."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, nanoseconds, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl(PR_SET_TIMERSLACK, {nanoseconds}) failed")


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not argv[0].isdigit():
        sys.exit("usage: python -m infra.timer_slack NANOSECONDS COMMAND [ARG...]")
    set_timer_slack(int(argv[0]))
    os.execvp(argv[1], argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
