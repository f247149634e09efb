"""Start, stop and health-wait the local servers as detached processes tracked by PID files.

Every server steno starts gets a PID file and a log file under the stack folder, so `make up`
is idempotent (a live PID is left alone), `make down` stops exactly what steno started, and a
newcomer knows where to look when something fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from infra.settings import settings


@dataclass(frozen=True)
class Service:
    """A long-running local server: how to run it and how to know it is really usable."""

    name: str
    argv: Sequence[str]
    healthy: Callable[[], bool]
    listens: str
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    start_timeout_s: float = 120.0
    stop_timeout_s: float = 30.0
    timer_slack_ns: int | None = None  # None: the kernel's default (see `infra.timer_slack`)

    @property
    def pid_file(self) -> Path:
        return settings.stack.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return settings.stack.log_dir / f"{self.name}.log"


class StartError(RuntimeError):
    """A server did not become healthy; the message names its log."""


def running_pid(service: Service) -> int | None:
    """The PID recorded for the service, if that process is still alive (and not a zombie)."""
    try:
        pid = int(service.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:
        return None
    return pid


def start(*services: Service) -> None:
    """Start every service that is not running, then wait until each answers its health check.

    All processes are launched before any wait, so the JVMs warm up side by side.
    """
    for service in services:
        if running_pid(service) is None and not is_healthy(service):
            _spawn(service)
    for service in services:
        wait_until_healthy(service)
        say(f"{service.name}: ready at {service.listens} (log: {service.log_file})")


def _spawn(service: Service) -> None:
    service.log_file.parent.mkdir(parents=True, exist_ok=True)
    service.pid_file.parent.mkdir(parents=True, exist_ok=True)
    with service.log_file.open("ab") as log:
        proc = subprocess.Popen(
            _with_timer_slack(service),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **service.env},
            cwd=service.cwd,
            start_new_session=True,  # survives the `make up` shell; stopped as a group
        )
    service.pid_file.write_text(str(proc.pid))
    say(f"{service.name}: started (pid {proc.pid})")


def _with_timer_slack(service: Service) -> list[str]:
    """The service's command, started through `infra.timer_slack` when it asks for a timer slack."""
    if service.timer_slack_ns is None:
        return list(service.argv)
    return [sys.executable, "-m", "infra.timer_slack", str(service.timer_slack_ns), *service.argv]


def wait_until_healthy(service: Service) -> None:
    """Poll the health check, printing progress, until it passes, the process dies, or time runs out."""
    deadline = time.monotonic() + service.start_timeout_s
    started = time.monotonic()
    last_report = started
    while time.monotonic() < deadline:
        if is_healthy(service):
            return
        if running_pid(service) is None:
            raise StartError(f"{service.name} exited during start-up; see the end of {service.log_file}")
        if time.monotonic() - last_report >= 5:
            last_report = time.monotonic()
            say(f"{service.name}: waiting for health ({time.monotonic() - started:.0f}s)")
        time.sleep(0.25)
    raise StartError(
        f"{service.name} was not healthy after {service.start_timeout_s:.0f}s; "
        f"see {service.log_file}, then `make down && make up`"
    )


def is_healthy(service: Service) -> bool:
    try:
        return service.healthy()
    except Exception:  # a health probe that raises just means "not yet"
        return False


def stop(service: Service) -> None:
    """Stop the service's whole process group: SIGTERM, then SIGKILL after the grace period."""
    pid = running_pid(service)
    if pid is None:
        service.pid_file.unlink(missing_ok=True)
        return
    say(f"{service.name}: stopping (pid {pid})")
    _signal_group(pid, signal.SIGTERM)
    try:
        psutil.Process(pid).wait(timeout=service.stop_timeout_s)
    except psutil.TimeoutExpired:
        _signal_group(pid, signal.SIGKILL)
    except psutil.NoSuchProcess:
        pass
    service.pid_file.unlink(missing_ok=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(pid, sig)


def say(message: str) -> None:
    """Progress for humans, on stderr so stdout stays parseable."""
    print(f"[steno] {message}", file=sys.stderr, flush=True)
