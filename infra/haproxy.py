"""HAProxy from Debian's package, in front of the API instances when there is more than one.

Clients connect to `settings.api.url`; HAProxy sends each request to the instance with the fewest
open connections (`balance leastconn`: an SSE stream counts while it is open, so the instance
streaming least gets the next one), and only to instances whose `/readyz` answers. It is set up
for SSE: responses are never buffered (HAProxy streams them as the API writes), the server and
tunnel timeouts outlast any stream (the API sends a heartbeat every api.heartbeat_s), and the
connection to the API is closed after each response (`http-server-close`), so every request of
a keep-alive client is balanced on its own. Every response names the instance that served it
(X-Steno-Instance). A request whose instance refuses the connection (it was just killed) is sent
to another one (`retry-on conn-failure`, `redispatch`); a stream that an instance's death cuts
is resumed by the client with its last id, on a surviving instance.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from infra import debian
from infra.process import Service
from infra.settings import settings

PACKAGE = "haproxy"


def prepare() -> None:
    """Install HAProxy and write its config; nothing with a single API instance."""
    if settings.stack.instances == 1:
        return
    debian.ensure_installed("haproxy", PACKAGE)
    write_config()


def instance_ports() -> list[int]:
    """The API instances' ports: the balancer's port + 1, + 2, ..."""
    return [settings.api.port + i for i in range(1, settings.stack.instances + 1)]


def config_file() -> Path:
    return settings.stack.root / "haproxy" / "haproxy.cfg"


def write_config() -> None:
    config_file().parent.mkdir(parents=True, exist_ok=True)
    config_file().write_text(config())


def config() -> str:
    api, lb = settings.api, settings.balancer
    servers = "".join(
        f"    server api-{i} {api.host}:{port} check\n" for i, port in enumerate(instance_ports(), start=1)
    )
    return f"""\
# Written by infra/haproxy.py on every `steno up`: edit that file, not this one.
global
    maxconn 4096
    log stdout format raw local0 notice

defaults
    mode http
    log global
    option httplog
    option http-server-close
    no option http-buffer-request
    option redispatch
    retries 3
    retry-on conn-failure empty-response
    timeout connect 2s
    timeout client {lb.timeout_s}s
    timeout server {lb.timeout_s}s
    timeout tunnel {lb.timeout_s}s
    timeout http-request 30s
    timeout queue 10s

frontend api
    bind {api.host}:{api.port}
    default_backend api

backend api
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    http-response set-header X-Steno-Instance %s
    default-server inter {lb.check_interval_ms}ms fall 2 rise 2
{servers}"""


def services() -> list[Service]:
    """The balancer, only with more than one API instance (a single one is reached directly)."""
    if settings.stack.instances == 1:
        return []
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    return [
        Service(
            name="haproxy",
            argv=[binary, "-db", "-f", str(config_file())],  # -db: foreground, stopped by its PID file
            healthy=accepts,
            listens=f"{settings.api.url} -> {', '.join(f'{settings.api.host}:{p}' for p in instance_ports())}",
            start_timeout_s=30,
        )
    ]


def accepts() -> bool:
    with socket.create_connection((settings.api.host, settings.api.port), timeout=1):
        return True
