"""`infra.timer_slack` runs a command with the timer slack it is given, in every thread it starts."""

from __future__ import annotations

import subprocess
import sys

READ_SLACKS = """
import threading
def own():
    print(open(f"/proc/{threading.get_native_id()}/timerslack_ns").read().strip())
own()
thread = threading.Thread(target=own)
thread.start()
thread.join()
"""


def test_the_command_and_the_threads_it_starts_get_the_slack() -> None:
    run = [sys.executable, "-m", "infra.timer_slack", "123456", sys.executable, "-c", READ_SLACKS]

    slacks = subprocess.run(run, capture_output=True, text=True, check=True).stdout.split()

    assert slacks == ["123456", "123456"]


def test_a_slack_that_is_no_number_is_refused_with_the_usage() -> None:
    run = [sys.executable, "-m", "infra.timer_slack", "soon", "true"]

    refused = subprocess.run(run, capture_output=True, text=True)

    assert refused.returncode != 0 and "usage: python -m infra.timer_slack NANOSECONDS" in refused.stderr
