"""The processors run ahead of the stack's other processes, every thread of them, as
`settings.stack.processors_nice` says (`infra.supervisor.Program.argv`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra import app_services, supervisor

CAP_SYS_NICE = 23  # linux/capability.h


def may_raise_priority() -> bool:
    """Root, or the capability: what `nice` needs to run a process ahead of the default."""
    status = Path("/proc/self/status").read_text()
    [effective] = [line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")]
    return os.geteuid() == 0 or bool(int(effective, 16) >> CAP_SYS_NICE & 1)


def thread_nice(pid: int) -> set[int]:
    """The nice value of each of the process's threads (field 19 of /proc/<pid>/task/<tid>/stat)."""
    values = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        after_name = (task / "stat").read_text().rsplit(")", 1)[1].split()
        values.add(int(after_name[16]))  # fields 3.. follow the name: field 19 is the 17th of them
    return values


@pytest.mark.skipif(not may_raise_priority(), reason="raising a process's CPU priority needs root or CAP_SYS_NICE")
@pytest.mark.parametrize("program", app_services.PROGRAMS, ids=lambda p: p.name)
def test_each_process_runs_at_its_priority(program: supervisor.Program) -> None:
    pid = supervisor.pid(program.name)
    assert pid is not None, f"supervisord runs no {program.name}: `steno up`"
    assert thread_nice(pid) == {program.nice}
