"""The local stack heals itself: supervisord restarts a killed steno process, and `steno status`
counts a process healthy only while that very process serves (design rule 9)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import pytest

from infra import app_services, supervisor
from tests.integration.steno_client import until as until_async

pytestmark = pytest.mark.chaos


def program(name: str) -> supervisor.Program:
    [found] = [p for p in app_services.PROGRAMS if p.name == name]
    return found


async def until(condition: Callable[[], bool], timeout_s: float) -> None:
    """Wait for a blocking check of the stack (supervisord, the group's members) to hold."""
    await until_async(lambda: asyncio.to_thread(condition), timeout_s)


def running_pid(name: str) -> int:
    pid = supervisor.pid(name)
    assert pid is not None, f"supervisord runs no {name}: `steno up`"
    return pid


@pytest.mark.parametrize("name", ["projections", "processors", "bridge", "api"])
async def test_a_killed_process_is_restarted_and_serves_again(name: str) -> None:
    old = running_pid(name)
    os.kill(old, signal.SIGKILL)

    await until(lambda: supervisor.pid(name) not in (None, old), timeout_s=10)
    await until(lambda: app_services.is_healthy(program(name)), timeout_s=60)


async def test_a_frozen_consumer_is_not_counted_healthy_until_it_thaws() -> None:
    """SIGSTOP: the process is alive, but its group drops it after the session timeout; status
    must say so. SIGCONT: it rejoins and is healthy again."""
    pid = running_pid("projections")
    os.kill(pid, signal.SIGSTOP)
    try:
        await until(lambda: not app_services.is_healthy(program("projections")), timeout_s=30)
        assert supervisor.pid("projections") == pid  # alive all along: not a restart
    finally:
        os.kill(pid, signal.SIGCONT)
    await until(lambda: app_services.is_healthy(program("projections")), timeout_s=60)
