"""How a steno process that is wedged ends: as `kill -9` would end it, for its supervisor to restart.

Every steno process loses nothing when killed (offsets are committed only after their effects are
acknowledged, rule 6), so where a process finds itself waiting on something that will not come
(a stop that cannot finish, a rebalance callback that cannot return), ending it is safe, and
waiting forever is not: a process that never exits is never restarted.

Two shapes: `ended_or_exit` bounds an await on the event loop, and names the stuck tasks;
`deadline` bounds a blocking call in a thread (librdkafka's callbacks and synchronous calls take
no timeout), from a timer thread, and names every thread's stack, since the one that holds the
wait may be another: the event loop the callback waits on, itself blocked.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

EXIT_WEDGED = 70  # EX_SOFTWARE: supervisord restarts a process whatever its exit status
log = logging.getLogger(__name__)
hard_exit: Callable[[int], object] = os._exit  # what ends the process (a test records it instead)


def exit_wedged(why: str) -> None:
    """End the process now, saying why in the log (a test's recorded `hard_exit` returns)."""
    log.critical("%s: exiting, to be restarted", why)
    hard_exit(EXIT_WEDGED)


async def ended_or_exit(tasks: set[asyncio.Task[Any]], timeout_s: float, what: str) -> None:
    """Wait until the tasks have ended; past `timeout_s`, exit, logging where each that has not is
    stuck (`what` names them in the log)."""
    if not tasks:
        return
    _, stuck = await asyncio.wait(tasks, timeout=timeout_s)
    if stuck:
        stacks = "\n".join(_stack(task) for task in stuck)
        exit_wedged(f"{len(stuck)} {what} did not end within {timeout_s:g} s:\n{stacks}")


def _stack(task: asyncio.Task[Any]) -> str:
    out = io.StringIO()
    task.print_stack(file=out)
    return out.getvalue()


@contextmanager
def deadline(timeout_s: float, what: str) -> Iterator[None]:
    """Exit if the block has not ended within `timeout_s`, logging every thread's stack."""
    timer = threading.Timer(timeout_s, _overran, (timeout_s, what))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _overran(timeout_s: float, what: str) -> None:
    exit_wedged(f"{what} did not end within {timeout_s:g} s; every thread:\n{_threads()}")


def _threads() -> str:
    frames = sys._current_frames()
    return "\n".join(
        f"thread {thread.name}:\n{''.join(traceback.format_stack(frame))}"
        for thread in threading.enumerate()
        if (frame := frames.get(thread.ident or 0)) is not None
    )
