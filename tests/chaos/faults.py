"""Faults struck at the running stack, and the healing that leaves it as it was.

steno's own processes are found by command line (`python -m ingest_api`, ...); the servers by
their PID files in `.stack/run/`. A killed steno process is restarted by the stack's process
supervisor; where none restarted it after a grace period, `steno up` does (it starts whatever
is not running). A killed server is started again with `steno up` at once, as an operator or a
service manager would. Every wait is for a condition, with a deadline that names what failed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

import psutil
from confluent_kafka.admin import AdminClient

from infra.settings import REPO_ROOT, settings

STENO = str(REPO_ROOT / ".venv" / "bin" / "steno")
MODULES = {
    "api": "ingest_api",
    "processors": "stream_processors",
    "bridge": "inference_bridge",
    "projections": "projections",
}
GROUPS = {"processors": "steno-processors", "bridge": "steno-bridge", "projections": "steno-projections"}
SUPERVISOR_GRACE_S = 5.0  # a supervisor restarts a crashed process in ~2 s; after this, `steno up` does
HEAL_TIMEOUT_S = 240.0  # a killed Cassandra replays its commit log before it answers again
ORPHAN_TIMEOUT_S = 60.0  # a program's own shutdown on SIGTERM: the bridge's drain (20 s) and margin


class StackNotHealthy(AssertionError):
    """The stack did not come back; the message says what is still down."""


def steno_pids(name: str) -> list[int]:
    """The live processes running steno's `name` (`python -m <module>`) under this stack's
    supervisord: another stack's (the cluster mode's, beside the single-node one) are not ours to kill."""
    wanted = ["-m", MODULES[name]]
    supervisord = _supervisord_pid()
    found = []
    for proc in psutil.process_iter(["cmdline", "status", "ppid"]):
        cmdline = proc.info["cmdline"] or []
        ours = proc.info["ppid"] == supervisord
        if ours and proc.info["status"] != psutil.STATUS_ZOMBIE and _contains(cmdline, wanted):
            found.append(proc.pid)
    return found


def _supervisord_pid() -> int | None:
    try:
        return int((settings.stack.run_dir / "supervisor.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _contains(cmdline: list[str], wanted: list[str]) -> bool:
    return any(cmdline[i : i + len(wanted)] == wanted for i in range(len(cmdline)))


def server_pid(name: str) -> int:
    pid_file = settings.stack.run_dir / f"{name}.pid"
    try:
        return int(pid_file.read_text().strip())
    except FileNotFoundError:
        raise StackNotHealthy(f"{pid_file} is missing: was {name} started by `steno up`?") from None


def stack_status() -> tuple[bool, str]:
    """`steno status`: whether everything is healthy, and its report."""
    done = subprocess.run([STENO, "status"], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    return done.returncode == 0, done.stdout


def steno_up(timeout_s: float = 300.0) -> str:
    """`steno up`, as an operator would type it; what it printed (its errors too). One that has
    not finished within the timeout is reported, not raised: the heal goes on, and says so."""
    try:
        done = subprocess.run([STENO, "up"], capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired as late:
        said = (late.stdout or b"").decode(errors="replace") + (late.stderr or b"").decode(errors="replace")
        return f"{said}\n(`steno up` had not finished after {timeout_s:.0f}s)"
    return done.stdout + done.stderr


def until(condition: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.25) -> float:
    """Wait for `condition`; the seconds it took. Raises naming `what` at the deadline."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout_s:
            raise StackNotHealthy(f"{what}: not after {timeout_s:.0f}s")
        time.sleep(poll_s)
    return time.monotonic() - began


def heal(gone: AbstractSet[int] = frozenset()) -> None:
    """Wait until every steno process runs (none of the `gone` pids) and the stack is healthy.

    What the supervisor does not restart within its grace period is started by `steno up`.
    """
    began = time.monotonic()
    last_up, up_said = began, "(not run)"
    while True:
        running = {name: steno_pids(name) for name in MODULES}
        back = all(pids and not set(pids) & gone for pids in running.values())
        healthy, report = stack_status() if back else (False, f"not running: {running}")
        if healthy:
            return
        now = time.monotonic()
        if now - began > HEAL_TIMEOUT_S:
            raise StackNotHealthy(
                f"the stack is not healthy {HEAL_TIMEOUT_S:.0f}s after the fault:\n{report}\n"
                f"the last `steno up` printed:\n{up_said}\n{_down_logs(stack_status()[1])}"
            )
        if now - last_up > SUPERVISOR_GRACE_S:
            up_said = steno_up()
            last_up = time.monotonic()
        time.sleep(0.5)


def _down_logs(report: str, lines: int = 40) -> str:
    """The end of the log of each process `steno status` reports DOWN: what a person reads first."""
    tails = []
    for line in report.splitlines():
        if " DOWN " in line and "log: " in line:
            log = Path(line.rsplit("log: ", 1)[1].strip())
            ending = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else ["(no log)"]
            tails.append(f"--- the end of {log}:\n" + "\n".join(ending))
    return "\n".join(tails)


def group_members(group: str) -> int:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap, "log_level": 0})
    [description] = [f.result(timeout=10) for f in admin.describe_consumer_groups([group]).values()]
    return len(description.members)


@dataclass(frozen=True)
class Fault:
    """One fault: `strike` breaks something now; `heal` waits until the stack is whole again."""

    name: str
    strike: Callable[[], set[int]]  # returns the pids it ended
    recover: Callable[[set[int]], None]

    def __str__(self) -> str:
        return self.name


def signal_steno(name: str, sig: signal.Signals = signal.SIGKILL) -> Fault:
    """A crash (SIGKILL) or a deploy's stop (SIGTERM) of a steno process; the supervisor restarts it."""

    def strike() -> set[int]:
        pids = set(steno_pids(name))
        assert pids, f"no `python -m {MODULES[name]}` runs: is the stack up?"
        for pid in pids:
            os.kill(pid, sig)
        return pids

    label = "kill -9" if sig == signal.SIGKILL else sig.name
    return Fault(f"{label} {name}", strike, heal)


def kill_server(name: str) -> Fault:
    """SIGKILL the server's whole process group (Triton's model stubs too), then start it again."""

    def strike() -> set[int]:
        pid = server_pid(name)
        os.killpg(pid, signal.SIGKILL)
        until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 10, name)
        return {pid}

    def recover(gone: set[int]) -> None:
        steno_up()
        heal()

    return Fault(f"kill -9 {name}, restart", strike, recover)


def kill_supervisor() -> Fault:
    """SIGKILL supervisord alone, then `steno up` as an operator (or systemd) would: the programs
    it ran must stop with it, not run on unsupervised beside the ones the new supervisord starts
    (holding the API's port, doubling every consumer group's members)."""
    programs: set[int] = set()

    def strike() -> set[int]:
        pid = _supervisord_pid()
        assert pid is not None, "no supervisord PID file: is the stack up?"
        programs.update(child.pid for child in psutil.Process(pid).children())
        os.kill(pid, signal.SIGKILL)
        until(
            lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
            10,
            "supervisord",
        )
        return {pid}

    def recover(_: set[int]) -> None:
        try:
            until(lambda: not any(map(_running, programs)), ORPHAN_TIMEOUT_S, "the dead supervisord's programs ending")
        finally:
            steno_up()
            heal()

    return Fault("kill -9 supervisord, steno up", strike, recover)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def freeze_server(name: str, seconds: float) -> Fault:
    """SIGSTOP the server's whole process group for `seconds`, then SIGCONT: a server that stops
    answering without closing a connection (a stalled VM, a long collector pause) and comes back.
    Clients see no error, only silence, so every wait on it needs its own deadline."""
    return _frozen(name, seconds, lambda: [server_pid(name)], os.killpg)


def freeze_steno(name: str, seconds: float) -> Fault:
    """SIGSTOP a steno process for `seconds`, then SIGCONT: its connections stay open and its
    clocks run on, so every deadline it set before the freeze has passed when it wakes (its
    unacknowledged produces', its claims' and its leases' in the stores)."""
    return _frozen(name, seconds, lambda: steno_pids(name), os.kill)


def _frozen(name: str, seconds: float, pids: Callable[[], list[int]], send: Callable[[int, int], None]) -> Fault:
    """The freeze lasts a set time, as the fault does; the heal then waits for conditions."""
    frozen: list[tuple[list[int], float]] = []

    def strike() -> set[int]:
        found = pids()
        assert found, f"no {name} runs: is the stack up?"
        for pid in found:
            send(pid, signal.SIGSTOP)
        frozen.append((found, time.monotonic()))
        return set()

    def recover(_: set[int]) -> None:
        found, at = frozen.pop()
        try:
            time.sleep(max(0.0, at + seconds - time.monotonic()))  # the fault's length, not a wait for a condition
        finally:
            for pid in found:
                send(pid, signal.SIGCONT)
        heal()

    return Fault(f"SIGSTOP {name} {seconds:g} s, SIGCONT", strike, recover)


def stop_past_session(name: str) -> Fault:
    """SIGSTOP a consumer until its group has given up on it (its session timed out), then SIGCONT:
    a member the group already replaced comes back."""
    stopped: set[int] = set()

    def strike() -> set[int]:
        pids = set(steno_pids(name))
        assert pids, f"no `python -m {MODULES[name]}` runs: is the stack up?"
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        stopped.update(pids)
        return set()

    def recover(_: set[int]) -> None:
        try:
            until(lambda: group_members(GROUPS[name]) == 0, 180, f"{GROUPS[name]} dropping its stopped member", 1.0)
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        heal()

    return Fault(f"SIGSTOP {name} past its session timeout, SIGCONT", strike, recover)


def no_fault() -> Fault:
    return Fault("none (baseline)", lambda: set(), lambda _: None)
