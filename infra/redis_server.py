"""Redis from Debian's `redis-server` package, for the active-context cache.

A Redis already listening on the configured port is reused and never stopped by steno: it may
belong to someone else. Only a Redis that steno started (it has our PID file) is stopped.
"""

from __future__ import annotations

import redis

from infra import debian
from infra.process import Service
from infra.settings import settings

PACKAGE = "redis-server"


def prepare() -> None:
    """Install Debian's redis-server if it is missing."""
    debian.ensure_installed("redis-server", PACKAGE)


def ping() -> bool:
    """True when a Redis answers PING on the configured address."""
    client = redis.Redis(host=settings.redis.host, port=settings.redis.port, socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


def services() -> list[Service]:
    """One Redis, even in cluster mode: it holds only what the log rebuilds (the active-context
    cache, reply claims, deletion markers), so losing it costs a rebuild, never data."""
    return [service()]


def service() -> Service:
    data_dir = settings.stack.data_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    return Service(
        name="redis",
        argv=[
            "redis-server",
            "--bind",
            settings.redis.host,
            "--port",
            str(settings.redis.port),
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",  # the cache can be rebuilt from the log, but restarts stay warm
            "--save",
            "",
            "--daemonize",
            "no",
        ],
        healthy=ping,
        listens=f"{settings.redis.host}:{settings.redis.port}",
        start_timeout_s=30,
    )
