"""The local stack as one unit: `make up`, `make down` and `make status` call these."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

from infra import (
    app_services,
    cassandra,
    components,
    haproxy,
    kafka,
    migrate,
    process,
    redis_server,
    supervisor,
    triton,
)
from infra.process import Service, StartError, say
from infra.settings import settings
from schemas import topics

SERVERS: tuple[ModuleType, ...] = (redis_server, kafka, cassandra, triton, haproxy)


def servers() -> list[Service]:
    """Every server of the stack: one of each, or in cluster mode every node of each."""
    return [service for module in SERVERS for service in module.services()]


def supervisord() -> Service:
    return supervisor.service(app_services.PROGRAMS)


def up() -> None:
    """Fetch what is missing, start what is not running, and wait until all of it is usable."""
    began = time.monotonic()
    _timed("prepare", lambda: [module.prepare() for module in SERVERS])
    _timed("start servers", start_servers)
    _timed("migrate Cassandra", migrate_views)
    _timed("create topics", create_topics)
    _timed("start steno", start_programs)
    say(f"stack is up in {time.monotonic() - began:.1f}s")


def start_servers() -> None:
    """All servers at once, except a cluster's Cassandra nodes after the first: each joins once
    the one before it serves (Cassandra refuses two nodes joining at the same time)."""
    joining = {service.name for service in cassandra.services()[1:]}
    process.start(*(service for service in servers() if service.name not in joining))
    for service in cassandra.services()[1:]:
        process.start(service)


def migrate_views() -> None:
    """Every migration, into the configured keyspace and into every other one a component keeps
    views in (the projections' live generation, once a swap made another one live)."""
    for keyspace in dict.fromkeys([settings.cassandra.keyspace, *components.keyspaces()]):
        migrate.apply_all(keyspace)


def create_topics() -> None:
    kafka.ensure_topics(
        {topic.name: topic.partitions for topic in topics.ALL},
        {topic.name: topic.config for topic in topics.ALL},
    )


def start_programs() -> None:
    """supervisord with steno's processes under it; wait until every one of them serves."""
    supervisor.write_config(app_services.PROGRAMS)
    if process.running_pid(supervisord()) is None:
        process.start(supervisord())
    else:
        supervisor.apply_config()
    for program in app_services.PROGRAMS:
        supervisor.start(program.name)
    for program in app_services.PROGRAMS:
        _wait_until_serving(program)


def _wait_until_serving(program: supervisor.Program, timeout_s: float = 90.0) -> None:
    began = time.monotonic()
    while not app_services.is_healthy(program):
        supervisor.check_not_given_up(program)
        if time.monotonic() - began > timeout_s:
            raise StartError(f"{program.name} was not serving after {timeout_s:.0f}s; see {program.log_file}")
        time.sleep(0.25)
    say(f"{program.name}: ready at {app_services.listens(program)} (log: {program.log_file})")


def instances(name: str) -> list[supervisor.Program]:
    """The programs `name` means: that one instance (`api-2`), or every instance of a kind (`api`)."""
    found = [p for p in app_services.PROGRAMS if name in (p.name, p.kind)]
    if not found:
        raise ValueError(f"no steno process {name!r}; these run: {[p.name for p in app_services.PROGRAMS]}")
    return found


def restart(name: str) -> None:
    """Restart one of steno's processes (every instance of it, one after another, to pick up
    changed code) and wait until each serves again."""
    for program in instances(name):
        supervisor.restart(program.name)
        _wait_until_serving(program)


def stop(name: str) -> None:
    """Stop one of steno's processes (every instance of it, gracefully), e.g. for
    `steno replay --reset`; `steno up` starts it again."""
    for program in instances(name):
        supervisor.stop(program.name)
        say(f"{program.name}: stopped; `steno up` starts it again")


def down() -> None:
    """Stop everything steno started (a Redis it found running is left alone); supervisord stops
    its processes first, each with its grace period. A cluster's nodes of one kind stop together:
    one after another, the last Kafka broker would have no controller quorum left to shut down
    with, and wait out its whole grace period."""
    process.stop(supervisord())
    for module in reversed(SERVERS):
        with ThreadPoolExecutor() as pool:
            list(pool.map(process.stop, module.services()))
    say("stack is down")


def status() -> bool:
    """Print one line per process; True when all of them are alive and serving."""
    all_healthy = True
    for service in [*servers(), supervisord()]:
        pid = process.running_pid(service)
        healthy = process.is_healthy(service)
        all_healthy &= healthy
        _line(service.name, "healthy" if healthy else "DOWN", service.listens, pid, service.log_file)
    for program in app_services.PROGRAMS:
        healthy = app_services.is_healthy(program)
        all_healthy &= healthy
        info = supervisor.info(program.name)
        state = "healthy" if healthy else (info["statename"] if info else "DOWN")
        _line(program.name, state, app_services.listens(program), supervisor.pid(program.name), program.log_file)
    return all_healthy


def _line(name: str, state: str, listens: str, pid: int | None, log: object) -> None:
    owner = f"pid {pid}" if pid else "not started by steno"
    print(f"{name:<14} {state:<8} {listens:<34} {owner:<22} log: {log}")


def _timed(step: str, action: Callable[[], object]) -> None:
    began = time.monotonic()
    action()
    say(f"{step}: {time.monotonic() - began:.1f}s")
