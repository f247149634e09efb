"""A processors worker wedged out of its consumer group, or in it not reading, stops, so that its
supervisor restarts it.

The wedge seen in the chaos suite (aiokafka's group coordination stuck behind a coordinator lookup
that never returned after a broker restart) is reproduced by stopping the app's group
coordination (its aiokafka coordination and heartbeat tasks) in a running in-process app on the
real Kafka: the worker stays alive, the broker drops it from the group after the session timeout,
and nothing in Faust or aiokafka notices. The one a clean-clone CI run saw (a rebalance that left
the worker's new partitions paused: a stable member that never fetched) by pausing the app's
partitions: heartbeats go on, and only the unmoving committed offsets show it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import cast

import faust
import pytest

from infra import wedged
from infra.settings import settings
from projections.consuming import forget_committed_offsets
from stream_processors import membership_watchdog
from stream_processors.app import Topics, create_app
from tests.integration.log_io import produce_raw
from tests.integration.processors_harness import crash_reason, scratch_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RUN = f"membership-{uuid.uuid4().hex[:10]}"
GROUP = f"test-{RUN}"
STOP_WAIT_S = 60.0


def stop_group_coordination(app: faust.App) -> None:
    """Cancel the consumer's coordination and heartbeat tasks, on the consumer thread's loop."""
    thread = app.consumer._thread  # type: ignore[attr-defined]  # Faust's aiokafka consumer thread
    coordinator = thread._ensure_consumer()._coordinator
    for task in (coordinator._coordination_task, coordinator._heartbeat_task):
        if task is not None:
            thread.thread_loop.call_soon_threadsafe(task.cancel)


def wedge_coordinator_lookup(app: faust.App) -> Callable[[], None]:
    """The wedge itself: the consumer's next group-coordinator lookup never returns (as one begun
    while the broker was down did), and the coordinator is marked dead so that the coordination
    task starts that lookup. Returns what lets the lookup through again."""
    thread = app.consumer._thread  # type: ignore[attr-defined]  # Faust's aiokafka consumer thread
    consumer = thread._ensure_consumer()
    client, coordinator, loop = consumer._client, consumer._coordinator, thread.thread_loop
    lookup = client.coordinator_lookup
    released = asyncio.Event()  # used on the consumer thread's loop only

    async def unanswered(*args: object, **kwargs: object) -> object:
        await released.wait()
        return await lookup(*args, **kwargs)

    client.coordinator_lookup = unanswered
    loop.call_soon_threadsafe(coordinator.coordinator_dead)
    return lambda: loop.call_soon_threadsafe(released.set)


async def member_of_a_stable_group(app: faust.App) -> None:
    deadline = time.monotonic() + STOP_WAIT_S
    while not app.consumer.assignment():
        assert time.monotonic() < deadline, "the app never got its partitions"
        await asyncio.sleep(0.1)


def deadline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == membership_watchdog.DEADLINE_THREAD]


async def crash_when(wedge: Callable[[faust.App, Topics], None]) -> tuple[BaseException, list[threading.Thread]]:
    """Run an app on scratch topics until it is a member, `wedge` it, and wait for its crash: why
    it crashed, and the hard-exit deadlines the crash armed (the app is stopped afterwards)."""
    with scratch_topics(RUN) as topics:
        app = create_app(GROUP, topics, cache_namespace=RUN, offset_reset="earliest")
        await app.start()
        try:
            await member_of_a_stable_group(app)
            wedge(app, topics)
            return await crash_reason(app), deadline_threads()
        finally:
            await app.stop()
            forget_committed_offsets(GROUP)


async def test_a_worker_out_of_its_group_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """And its stop, completed, disarms the hard exit its crash armed: in tests the process goes on."""
    exits: queue.Queue[int] = queue.Queue()
    monkeypatch.setattr(wedged, "hard_exit", exits.put)
    monkeypatch.setattr(settings.kafka, "membership_grace_s", 1.0)
    reason, armed = await crash_when(lambda app, _: stop_group_coordination(app))
    assert f"not a member of consumer group {GROUP}" in str(reason)
    assert armed, "the crash armed no deadline"
    for thread in armed:
        thread.join(timeout=STOP_WAIT_S / 10)
    pending = [t for t in armed if t.is_alive()]
    for timer in pending:
        cast(threading.Timer, timer).cancel()  # a failing test must not end the test run later
    assert not pending, "the stopped worker's hard exit is still pending"
    assert exits.empty()


async def test_a_wedged_worker_ends_even_though_it_cannot_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real wedge: the crashed worker's stop waits on the unanswered lookup (aiokafka's close
    awaits the coordination task), so only the deadline ends the process."""
    exits: queue.Queue[int] = queue.Queue()
    monkeypatch.setattr(wedged, "hard_exit", exits.put)
    monkeypatch.setattr(settings.kafka, "membership_grace_s", 1.0)
    monkeypatch.setattr(settings.kafka, "wedged_stop_s", 2.0)
    with scratch_topics(RUN) as topics:
        app = create_app(GROUP, topics, cache_namespace=RUN, offset_reset="earliest")
        await app.start()
        release = lambda: None  # noqa: E731  (nothing to release until wedged)
        stopping: asyncio.Task[None] | None = None
        try:
            await member_of_a_stable_group(app)
            release = wedge_coordinator_lookup(app)
            reason = await crash_reason(app)
            stopping = asyncio.create_task(app.stop())  # as the worker stops a crashed app
            exit_status = await asyncio.to_thread(exits.get, timeout=STOP_WAIT_S)
            stuck = not stopping.done()
        finally:
            release()
            await (stopping or app.stop())
            forget_committed_offsets(GROUP)
    assert f"not a member of consumer group {GROUP}" in str(reason)
    assert exit_status == wedged.EXIT_WEDGED
    assert stuck, "the stop finished before the deadline: this test no longer reproduces the wedge"


async def test_a_worker_in_its_group_that_does_not_read_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its partitions paused, as a rebalance left them: a record waits, the group stays stable."""
    exits: queue.Queue[int] = queue.Queue()
    monkeypatch.setattr(wedged, "hard_exit", exits.put)
    monkeypatch.setattr(settings.kafka, "stall_grace_s", 1.0)

    def pause_with_a_record_waiting(app: faust.App, topics: Topics) -> None:
        app.consumer.pause_partitions(app.consumer.assignment())
        produce_raw(topics.conversations, str(uuid.uuid4()), b"{}")

    reason, _ = await crash_when(pause_with_a_record_waiting)
    assert f"past consumer group {GROUP}'s committed offset" in str(reason)
    assert exits.empty()
