"""How supervisord runs each of steno's processes: the command line (stopped when supervisord dies),
the processors' CPU priority."""

from __future__ import annotations

import sys

import pytest
from pydantic import ValidationError

from infra import app_services
from infra.settings import StackSettings, settings
from infra.supervisor import Program

DIES_WITH_SUPERVISORD = ["setpriv", "--pdeathsig", "TERM"]


def test_a_program_at_the_default_priority_runs_its_module_stopped_with_supervisord() -> None:
    program = Program("api", "ingest_api", priority=40, stop_grace_s=10)
    assert program.argv == [*DIES_WITH_SUPERVISORD, sys.executable, "-m", "ingest_api"]


def test_a_program_with_a_priority_runs_under_nice() -> None:
    program = Program("processors", "stream_processors", priority=20, stop_grace_s=15, nice=-10)
    assert program.argv == [*DIES_WITH_SUPERVISORD, "nice", "-n", "-10", sys.executable, "-m", "stream_processors"]


def test_only_the_processors_run_ahead_of_the_rest() -> None:
    nice = {program.name: program.nice for program in app_services.PROGRAMS}
    assert nice == {"projections": 0, "processors": settings.stack.processors_nice, "bridge": 0, "api": 0}


@pytest.mark.parametrize("nice", [-21, 20])
def test_a_priority_outside_nice_range_is_refused(nice: int) -> None:
    with pytest.raises(ValidationError, match="processors_nice"):
        StackSettings(processors_nice=nice)
