"""A wait that cannot end, ended: the process exits (recorded here, not done), naming where each
task, or each thread, that did not end is stuck."""

from __future__ import annotations

import asyncio
import threading

import pytest

from infra import wedged
from tests.unit.recorded_exits import Exits, recorded_exits


async def _ignores_cancellation(release: asyncio.Event) -> None:
    """A task that does not end when cancelled: the shape of a generation stuck in its cleanup."""
    try:
        await release.wait()
    except asyncio.CancelledError:
        await release.wait()


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> Exits:
    return recorded_exits(monkeypatch)


async def test_tasks_that_do_not_end_in_time_end_the_process_and_their_stacks_are_logged(
    exits: Exits, caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()
    stuck = asyncio.create_task(_ignores_cancellation(release))
    done = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0)
    stuck.cancel()

    await wedged.ended_or_exit({stuck, done}, 0.2, "generation(s)")

    assert exits.statuses == [wedged.EXIT_WEDGED]
    assert "1 generation(s) did not end within 0.2 s" in caplog.text
    assert "_ignores_cancellation" in caplog.text  # where it is stuck
    release.set()
    await stuck


async def test_tasks_that_end_in_time_leave_the_process_running(exits: Exits) -> None:
    tasks = {asyncio.create_task(asyncio.sleep(0.01)) for _ in range(3)}

    await wedged.ended_or_exit(tasks, 5, "generation(s)")

    assert exits.statuses == [] and all(task.done() for task in tasks)


def _holds_the_callback(exits: Exits) -> None:
    """A blocking call that takes no timeout (a synchronous librdkafka call), released only by
    the process's (recorded) exit."""
    assert exits.happened.wait(timeout=10), "the deadline never ended the process"


def _holds_the_loop(exits: Exits) -> None:
    exits.happened.wait(timeout=10)


def test_a_blocking_call_past_its_deadline_ends_the_process_naming_every_threads_stack(
    exits: Exits, caplog: pytest.LogCaptureFixture
) -> None:
    loop = threading.Thread(target=_holds_the_loop, args=(exits,), name="the-event-loop")
    loop.start()

    with wedged.deadline(0.2, "a rebalance callback"):
        _holds_the_callback(exits)

    loop.join()
    assert exits.statuses == [wedged.EXIT_WEDGED]
    assert "a rebalance callback did not end within 0.2 s" in caplog.text
    assert "_holds_the_callback" in caplog.text  # the thread in the call
    assert "thread the-event-loop" in caplog.text and "_holds_the_loop" in caplog.text  # the one it waits on


def test_a_blocking_call_that_ends_in_time_leaves_the_process_running(exits: Exits) -> None:
    before = set(threading.enumerate())
    with wedged.deadline(3600, "a rebalance callback"):
        [timer] = set(threading.enumerate()) - before

    timer.join(timeout=10)
    assert not timer.is_alive() and exits.statuses == []  # the deadline's timer ended without firing
