"""The local stack as one unit: `make up`, `make down` and `make status` call these."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import ModuleType

from infra import app_services, cassandra, components, kafka, migrate, process, redis_server, triton
from infra.process import Service, say
from infra.settings import settings
from schemas import topics

SERVERS: tuple[ModuleType, ...] = (redis_server, kafka, cassandra, triton)


def servers() -> list[Service]:
    return [module.service() for module in SERVERS]


def everything() -> list[Service]:
    return servers() + app_services.services()


def up() -> None:
    """Fetch what is missing, start what is not running, and wait until all of it is usable."""
    began = time.monotonic()
    _timed("prepare", lambda: [module.prepare() for module in SERVERS])
    _timed("start servers", lambda: process.start(*servers()))
    _timed("migrate Cassandra", migrate_views)
    _timed("create topics", create_topics)
    _timed("start steno", lambda: process.start(*app_services.services()))
    say(f"stack is up in {time.monotonic() - began:.1f}s")


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


def down() -> None:
    """Stop everything steno started (a Redis it found running is left alone)."""
    for service in reversed(everything()):
        process.stop(service)
    say("stack is down")


def status() -> bool:
    """Print one line per process; True when all of them are healthy."""
    all_healthy = True
    for service in everything():
        pid = process.running_pid(service)
        healthy = process.is_healthy(service)
        all_healthy &= healthy
        owner = f"pid {pid}" if pid else "not started by steno"
        state = "healthy" if healthy else "DOWN"
        print(f"{service.name:<12} {state:<8} {service.listens:<32} {owner:<22} log: {service.log_file}")
    return all_healthy


def _timed(step: str, action: Callable[[], object]) -> None:
    began = time.monotonic()
    action()
    say(f"{step}: {time.monotonic() - began:.1f}s")
