"""The chaos suite's log watch (`tests.chaos.unhandled`): only what a log gained since the watch
began counts, and only the lines no fault excuses."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.unhandled import LogWatch

UNRETRIEVED = "2026-12-07 09:48:16,844 ERROR asyncio: Task exception was never retrieved"


def test_only_unhandled_errors_written_since_the_watch_began_are_reported(tmp_path: Path) -> None:
    bridge, api, quiet = tmp_path / "bridge.log", tmp_path / "api.log", tmp_path / "redis.log"
    quiet.write_text("nothing new after this\n")
    bridge.write_text(UNRETRIEVED + "\nfuture: <Task finished coro=<_wrap_awaitable() done>>\n")  # before
    api.write_text("INFO started\n")
    watch = LogWatch(tmp_path)

    with bridge.open("a") as log:
        log.write("WARNING a retry\n" + UNRETRIEVED + "\nfuture: <Task finished coro=<_wrap_awaitable() done>>\n")
    with api.open("a") as log:
        log.write("ERROR uvicorn.error [-]: Exception in ASGI application\n")

    assert watch.unhandled() == [
        "api.log: ERROR uvicorn.error [-]: Exception in ASGI application",
        f"bridge.log: {UNRETRIEVED}",
    ]


def test_aiokafkas_own_commit_task_is_excused_and_a_rotated_log_is_read_whole(tmp_path: Path) -> None:
    processors = tmp_path / "processors.log"
    processors.write_text("x" * 10_000 + "\n")
    watch = LogWatch(tmp_path)

    processors.write_text(  # rotated: shorter than where the watch began
        UNRETRIEVED
        + "\nfuture: <Task finished name='Task-2943' coro=<GroupCoordinator._do_commit_offsets() done>>\n"
        + UNRETRIEVED
        + "\nfuture: <Task finished coro=<Processor.process() done>>\n"
    )

    assert watch.unhandled() == [f"processors.log: {UNRETRIEVED}"]
