"""A test that ran past its timeout fails, even where the timeout's exception was swallowed.

pytest-timeout's `signal` method raises its `Failed` in whatever Python code the main thread runs
when the alarm comes. Most of the time that is the test, and the test fails. But it can be code
that swallows every exception: a garbage-collector callback (hypothesis installs one once the
fuzz tests have run; CPython prints "Exception ignored in garbage collector callback") or an
asyncio callback (the loop logs the exception and runs on). The test then carries on and can
pass late, which is how a replay test once hid a run five minutes long.

This plugin times each test from the moment pytest-timeout arms its timer and, when the test
ended later than its limit with nothing failed yet, fails its last phase with the time it took.

A test that swallowed its timeout may also never end, and the alarm does not come twice. So the
plugin arms a backstop with it: at twice the limit, faulthandler's watchdog thread (C code, which
needs no GIL) writes every thread's stack to the terminal and ends the run with exit status 1,
rather than leaving it hung until CI's own limit, with nothing said. It is the one watchdog
faulthandler allows a process, so pytest's `faulthandler_timeout` option must stay unset.
"""

from __future__ import annotations

import faulthandler
import os
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import pytest

CLOCK = pytest.StashKey["Clock"]()
TERMINAL_FD = pytest.StashKey[int]()
BACKSTOP_FACTOR = 2  # a test still running at this many times its limit is taken for hung


@dataclass
class Clock:
    """When the timer was armed, the limit it was armed with, and whether a phase failed since."""

    started: float
    limit: float
    phase: str  # the phase after which the timer is cancelled: "teardown", or "call" for func_only
    failed: bool = False

    def overrun(self) -> float | None:
        """Seconds past the limit, or None when the test is within it."""
        over = time.monotonic() - self.started - self.limit
        return over if over > 0 else None


@pytest.hookimpl
def pytest_configure(config: pytest.Config) -> None:
    """Keep a descriptor of the terminal's stderr: during a test, capturing points fd 2 elsewhere."""
    config.stash[TERMINAL_FD] = os.dup(2)


@pytest.hookimpl
def pytest_unconfigure(config: pytest.Config) -> None:
    faulthandler.cancel_dump_traceback_later()
    os.close(config.stash[TERMINAL_FD])


@pytest.hookimpl
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    """Note the limit and arm the backstop; returns None, so pytest-timeout still arms its timer."""
    last_phase = "call" if settings.func_only else "teardown"
    item.stash[CLOCK] = Clock(time.monotonic(), settings.timeout, last_phase)
    terminal = item.config.stash[TERMINAL_FD]
    faulthandler.dump_traceback_later(settings.timeout * BACKSTOP_FACTOR, exit=True, file=terminal)


@pytest.hookimpl
def pytest_timeout_cancel_timer() -> None:
    """Disarm the backstop with pytest-timeout's timer (returns None, so that one is cancelled too)."""
    faulthandler.cancel_dump_traceback_later()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report: pytest.TestReport = yield
    clock = item.stash.get(CLOCK, None)
    if clock is None:
        return report
    clock.failed = clock.failed or report.failed
    if report.when == clock.phase and not clock.failed and (over := clock.overrun()) is not None:
        report.outcome = "failed"
        report.longrepr = (
            f"ran {clock.limit + over:.1f} s, past its {clock.limit:g} s timeout: the timeout's exception "
            "was raised where it was swallowed (a garbage-collector or asyncio callback); "
            "see the stacks pytest-timeout printed"
        )
    return report
