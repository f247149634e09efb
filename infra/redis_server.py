"""Redis from Debian's `redis-server` package, for the active-context cache.

A Redis already listening on the configured port is reused and never stopped by steno: it may
belong to someone else. Only a Redis that steno started (it has our PID file) is stopped.
"""

from __future__ import annotations

import shutil
import subprocess

import redis

from infra.process import Service, say
from infra.settings import settings

PACKAGE = "redis-server"


def prepare() -> None:
    """Install Debian's redis-server if it is missing (apt needs root, as on CI machines)."""
    if shutil.which("redis-server"):
        return
    say("redis: installing Debian's redis-server (first run only)...")
    install = ["apt-get", "install", "-y", "--no-install-recommends", PACKAGE]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(install, env=env, check=True)


def ping() -> bool:
    """True when a Redis answers PING on the configured address."""
    client = redis.Redis(host=settings.redis.host, port=settings.redis.port, socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


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
