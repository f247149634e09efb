"""A wait that cannot end, ended: the process exits (recorded here, not done), naming where each
task that did not end is stuck."""

from __future__ import annotations

import asyncio

import pytest

from infra import wedged


async def _ignores_cancellation(release: asyncio.Event) -> None:
    """A task that does not end when cancelled: the shape of a generation stuck in its cleanup."""
    try:
        await release.wait()
    except asyncio.CancelledError:
        await release.wait()


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    statuses: list[int] = []
    monkeypatch.setattr(wedged, "hard_exit", statuses.append)
    return statuses


async def test_tasks_that_do_not_end_in_time_end_the_process_and_their_stacks_are_logged(
    exits: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    release = asyncio.Event()
    stuck = asyncio.create_task(_ignores_cancellation(release))
    done = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0)
    stuck.cancel()

    await wedged.ended_or_exit({stuck, done}, 0.2, "generation(s)")

    assert exits == [wedged.EXIT_WEDGED]
    assert "1 generation(s) did not end within 0.2 s" in caplog.text
    assert "_ignores_cancellation" in caplog.text  # where it is stuck
    release.set()
    await stuck


async def test_tasks_that_end_in_time_leave_the_process_running(exits: list[int]) -> None:
    tasks = {asyncio.create_task(asyncio.sleep(0.01)) for _ in range(3)}

    await wedged.ended_or_exit(tasks, 5, "generation(s)")

    assert exits == [] and all(task.done() for task in tasks)
