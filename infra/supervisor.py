"""steno's own processes under supervisord, so that a crashed one runs again within a second or two.

supervisord (the `supervisor` package) is the process manager: `make up` starts it as one more
service of the stack (tracked by its PID file like the servers), and it runs api, processors,
bridge and projections, restarts any of them that exits, whatever the cause (`kill -9`, a fatal
error, the OOM killer), and on `make down` stops them in order (the API first, the projections
last), each with its own grace period, before it exits itself. Nobody has to type a command
after a crash, and `steno status` asks supervisord which process is alive.

The configuration is written from `infra.app_services` on every `steno up`; a running supervisord
reloads it, so a changed program definition takes effect without a restart of the others.
"""

from __future__ import annotations

import configparser
import shlex
import sys
import xmlrpc.client
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from infra.process import Service, StartError
from infra.settings import REPO_ROOT, settings

RUNNING = "RUNNING"
ACTIVE = {RUNNING, "STARTING", "BACKOFF"}  # running, or being (re)started by supervisord
GAVE_UP = {"FATAL", "EXITED"}  # supervisord stopped trying: a human must look at the log
STOP_ORDER_GRACE_S = 10.0  # supervisord's own work on top of its programs' grace periods
SUPERVISED_FDS = 12_000  # open files for supervisord and its programs: 10,000 SSE streams on one API, and margin


@dataclass(frozen=True)
class Program:
    """One of steno's processes, as supervisord runs it (one instance of it, with several: `api-2`)."""

    name: str
    module: str  # run as `python -m module`
    priority: int  # supervisord starts low numbers first and stops high numbers first
    stop_grace_s: int  # SIGTERM, then SIGKILL after this long
    instance: int = 0  # 0: the only one; 1, 2, ...: one of several, named `<kind>-<instance>`
    env: Mapping[str, str] = field(default_factory=dict)  # on top of supervisord's environment
    nice: int = 0  # its CPU priority against the stack's other processes (negative: ahead of them)

    @property
    def kind(self) -> str:
        """`api`, `bridge`, ...: what the process is, whichever instance."""
        return self.name.rsplit("-", 1)[0] if self.instance else self.name

    @property
    def argv(self) -> list[str]:
        """Its command line. `setpriv --pdeathsig TERM` (util-linux) has the kernel send the
        process SIGTERM, a deploy's stop, when supervisord dies: a supervisord killed outright
        stops nothing itself, and its programs would run on unsupervised, holding their ports
        and group memberships against the ones the next `steno up` starts (systemd's cgroup
        kill does the same for a unit). `nice` sets the priority for every thread the process
        will start; without the privilege to raise it (root or CAP_SYS_NICE), `nice` says so in
        the program's log and runs it at the default priority. Both exec what follows, so the
        process supervisord started is the Python one."""
        command = [sys.executable, "-m", self.module]
        if self.nice:
            command = ["nice", "-n", str(self.nice), *command]
        return ["setpriv", "--pdeathsig", "TERM", *command]

    @property
    def log_file(self) -> Path:
        return settings.stack.log_dir / f"{self.name}.log"


def config_file() -> Path:
    return settings.stack.run_dir / "supervisord.conf"


def socket_file() -> Path:
    return settings.stack.run_dir / "supervisor.sock"


def service(programs: Sequence[Program]) -> Service:
    """supervisord itself, in the foreground of its own process group, as a stack service."""
    return Service(
        name="supervisor",
        argv=[str(Path(sys.executable).with_name("supervisord")), "--nodaemon", "-c", str(config_file())],
        healthy=answers,
        listens=f"unix://{socket_file()}",
        cwd=REPO_ROOT,
        start_timeout_s=30,
        stop_timeout_s=sum(p.stop_grace_s for p in programs) + STOP_ORDER_GRACE_S,
    )


def write_config(programs: Sequence[Program]) -> None:
    """supervisord's configuration for the programs, written where `service()` reads it."""
    config = configparser.RawConfigParser()
    run, logs = settings.stack.run_dir, settings.stack.log_dir
    config["supervisord"] = {
        "logfile": str(logs / "supervisord.log"),
        "pidfile": str(run / "supervisord.pid"),
        "childlogdir": str(logs),
        # An API process holds a file descriptor per SSE stream (benchmarks/idle_streams.py: 10,000);
        # supervisord raises its own limit to this at start, and its programs inherit it.
        "minfds": str(SUPERVISED_FDS),
    }
    config["unix_http_server"] = {"file": str(socket_file()), "chmod": "0700"}
    config["rpcinterface:supervisor"] = {
        "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"
    }
    config["supervisorctl"] = {"serverurl": f"unix://{socket_file()}"}
    for program in programs:
        config[f"program:{program.name}"] = _program_section(program)
    run.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    with config_file().open("w") as out:
        config.write(out)


def _program_section(program: Program) -> dict[str, str]:
    return {
        "command": shlex.join(program.argv),
        "directory": str(REPO_ROOT),
        "priority": str(program.priority),
        "autostart": "true",
        # Restarted at once after any exit from RUNNING. A process that dies within its first
        # two seconds (a dependency still down) is retried with a back-off growing by a second
        # each time; after `startretries` supervisord gives up and `steno status` says FATAL.
        "autorestart": "true",
        "startsecs": "2",
        "startretries": "30",
        "stopsignal": "TERM",
        "stopwaitsecs": str(program.stop_grace_s),
        "stopasgroup": "true",
        "killasgroup": "true",
        "redirect_stderr": "true",
        "stdout_logfile": str(program.log_file),
        "stdout_logfile_maxbytes": "50MB",
        "stdout_logfile_backups": "2",
        "environment": ",".join(f'{key}="{value}"' for key, value in {"PYTHONUNBUFFERED": "1", **program.env}.items()),
    }


def rpc() -> Any:
    """supervisord's XML-RPC interface over its Unix socket (the API supervisorctl uses)."""
    transport = SupervisorTransport(None, None, serverurl=f"unix://{socket_file()}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def answers() -> bool:
    return rpc().getState()["statename"] == RUNNING


def apply_config() -> None:
    """Make a running supervisord follow the configuration file just written."""
    supervisor = rpc()
    [[added, changed, removed]] = supervisor.reloadConfig()
    for name in changed + removed:
        supervisor.stopProcess(name, True)
        supervisor.removeProcessGroup(name)
    for name in changed + added:
        supervisor.addProcessGroup(name)


def info(name: str) -> dict[str, Any] | None:
    """supervisord's view of the program (state, pid, ...); None when supervisord is not running."""
    try:
        return rpc().getProcessInfo(name)
    except (OSError, xmlrpc.client.Fault):
        return None


def pid(name: str) -> int | None:
    """The program's PID while supervisord says it runs."""
    process = info(name)
    return process["pid"] if process and process["statename"] == RUNNING else None


def start(name: str) -> None:
    """Start the program unless it runs (or is being started) already."""
    process = info(name)
    if process is not None and process["statename"] not in ACTIVE:
        rpc().startProcess(name, False)


def restart(name: str) -> None:
    """Stop the program gracefully (its grace period, then SIGKILL) and start it again."""
    supervisor, process = rpc(), info(name)
    if process is not None and process["statename"] in ACTIVE:
        supervisor.stopProcess(name, True)
    supervisor.startProcess(name, False)


def stop(name: str) -> None:
    """Stop the program gracefully; supervisord keeps it stopped until `start`."""
    process = info(name)
    if process is not None and process["statename"] in ACTIVE:
        rpc().stopProcess(name, True)


def check_not_given_up(program: Program) -> None:
    """Raise if supervisord stopped retrying the program, naming its log."""
    process = info(program.name)
    if process is not None and process["statename"] in GAVE_UP:
        raise StartError(
            f"{program.name} keeps exiting ({process['statename']}: {process['description']}); "
            f"see the end of {program.log_file}, then `steno restart {program.name}`"
        )
