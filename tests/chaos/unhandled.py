"""Errors no fault excuses: what the stack's processes logged as unhandled while a fault struck.

A fault may rightly make a process log warnings, retries, even its own deliberate exit. Two
lines are wrong whatever happened: asyncio's "Task exception was never retrieved" (a task failed
and nothing looked at it, so what it was doing went unnoticed) and uvicorn's "Exception in ASGI
application" (a client got a bare 500 where the answer should say what to do).

One task that is not steno's is excused: aiokafka's own offset commit in the processors' Faust
consumer, which it leaves unretrieved when the group has already dropped the member (a frozen
broker's sessions all expire at its return), before the consumer rejoins or the wedged worker
is restarted (`infra.membership`).
"""

from __future__ import annotations

import os
from itertools import pairwise
from pathlib import Path

UNHANDLED = ("Task exception was never retrieved", "Exception in ASGI application")
EXCUSED = ("coro=<GroupCoordinator._do_commit_offsets()",)  # on the line after, naming the task


class LogWatch:
    """The logs in a folder from now on: the lines they gain that say something went unhandled."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._sizes = {path: path.stat().st_size for path in log_dir.glob("*.log")}

    def unhandled(self) -> list[str]:
        """Each such line written since the watch began, after its log's name."""
        found: list[str] = []
        for path in sorted(self._log_dir.glob("*.log")):
            lines = self._since_start(path).splitlines()
            for line, after in pairwise([*lines, ""]):
                if any(m in line for m in UNHANDLED) and not any(e in after for e in EXCUSED):
                    found.append(f"{path.name}: {line}")
        return found

    def _since_start(self, path: Path) -> str:
        start = self._sizes.get(path, 0)
        with path.open("rb") as log:
            if log.seek(0, os.SEEK_END) < start:
                start = 0  # rotated since: all of the new file is new
            log.seek(start)
            return log.read().decode(errors="replace")
