"""A processors worker wedged out of its consumer group stops, so that its supervisor restarts it.

The wedge seen in the chaos suite (aiokafka's group coordination stuck behind a coordinator lookup
that never returned after a broker restart) is reproduced by stopping the app's group
coordination (its aiokafka coordination and heartbeat tasks) in a running in-process app on the
real Kafka: the worker stays alive, the broker drops it from the group after the session timeout,
and nothing in Faust or aiokafka notices.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import faust
import pytest

from infra.settings import settings
from stream_processors.app import create_app
from tests.integration.processors_harness import crash_reason, delete_group, scratch_topics

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


async def member_of_a_stable_group(app: faust.App) -> None:
    deadline = time.monotonic() + STOP_WAIT_S
    while not app.consumer.assignment():
        assert time.monotonic() < deadline, "the app never got its partitions"
        await asyncio.sleep(0.1)


async def test_a_worker_out_of_its_group_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings.kafka, "membership_grace_s", 1.0)
    with scratch_topics(RUN) as topics:
        app = create_app(GROUP, topics, cache_namespace=RUN, offset_reset="earliest")
        await app.start()
        try:
            await member_of_a_stable_group(app)
            stop_group_coordination(app)
            reason = await crash_reason(app)
        finally:
            await app.stop()
            delete_group(GROUP)
    assert f"not a member of consumer group {GROUP}" in str(reason)
