"""Run the inference bridge on scratch topics, in-process or as a process of its own (to kill,
freeze or SIGTERM for real). Shared by its tests and its benchmark.

Scratch copies of the bridge's topics (same partition counts) keep these runs and the stack's
own bridge out of each other's way: neither serves the other's requests.

`python -m tests.integration.bridge_harness TOPIC_PREFIX GROUP SCRIPTED_JSON` is the process:
`inference_bridge.__main__` on the scratch topics named TOPIC_PREFIX + the real topic's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from typing import Any

import uvloop

from inference_bridge import __main__ as bridge_main
from inference_bridge.service import Bridge
from inference_bridge.topics import Topics
from infra.settings import REPO_ROOT, settings
from projections.consuming import forget_committed_offsets
from tests.integration.scratch import scratch_copies


@contextmanager
def scratch_topics(run: str) -> Iterator[Topics]:
    """Fresh copies of the bridge's topics, deleted afterwards."""
    with scratch_copies(run, Topics().all()) as copies:
        yield Topics(*copies)


@dataclass(frozen=True)
class RunningBridge:
    group: str
    task: asyncio.Task[None]
    stopping: asyncio.Event

    async def stop(self) -> None:
        """Ask the bridge to stop (SIGTERM does this) and wait until it has."""
        self.stopping.set()
        await self.task

    async def crash(self) -> None:
        """Stop at once, draining and committing nothing, as if the process had died."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@asynccontextmanager
async def running_bridge(
    topics: Topics,
    scripted: Mapping[str, Any],
    group: str | None = None,
    endpoints: list[str] | None = None,
    **config: Any,
) -> AsyncIterator[RunningBridge]:
    """A bridge on `topics`, in the given consumer group or a new one (deleted afterwards).

    `scripted`: the sampling parameters it sends the scripted model (script, pace, failures);
    `config`: BridgeSettings fields to override.
    """
    new_group = group is None
    group = group or f"steno-bridge-test-{uuid.uuid4().hex}"
    bridge = Bridge(
        settings.bridge.model_copy(update=config),
        endpoints or settings.triton.bridge_endpoints,
        redis_url=settings.redis.url,
        group_id=group,
        sampling={"scripted": scripted},
        topics=topics,
    )
    stopping = asyncio.Event()
    running = RunningBridge(group, asyncio.create_task(bridge.run(stopping)), stopping)
    try:
        yield running
    finally:
        if not running.task.cancelled():
            await running.stop()
        if new_group:
            await asyncio.to_thread(forget_committed_offsets, group)


@contextmanager
def bridge_process(
    topics: Topics, group: str, scripted: Mapping[str, Any], **config: Any
) -> Iterator[subprocess.Popen]:
    """A bridge process on `topics` in `group`; `config`: BridgeSettings fields to override.

    Its log goes to this process's stderr (pytest shows it for a failed test). Killed at the end
    if the test left it running.
    """
    prefix = topics.inference_requests.name.removesuffix(Topics().inference_requests.name)
    env = {**os.environ, **{f"STENO_BRIDGE__{name.upper()}": str(value) for name, value in config.items()}}
    argv = [sys.executable, "-m", "tests.integration.bridge_harness", prefix, group, json.dumps(scripted)]
    process = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a frozen one cannot die otherwise
            process.kill()
        process.wait()


async def _serve(prefix: str, group: str, scripted: dict[str, Any]) -> None:
    """`inference_bridge.__main__`'s bridge, on the scratch topics and group given."""
    topics = Topics(*(replace(topic, name=prefix + topic.name) for topic in Topics().all()))
    await bridge_main.main(group_id=group, sampling={"scripted": scripted}, topics=topics)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bridge-process %(levelname)s %(name)s: %(message)s")
    uvloop.run(_serve(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))  # the loop the real bridge runs on
