"""steno's own processes, run under supervisord (`infra.supervisor`) beside the servers they use.

A process is healthy when it is alive and serving, not merely when something answers for it:
the API process supervisord runs answers /readyz, and each consumer process is itself a member of
its Kafka consumer group (its client id carries its PID, `kafka_clients.client_id`), so a dead or
frozen process is never counted healthy on the strength of a member that has not timed out yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

import httpx

from infra import supervisor
from infra.kafka_clients import stable_member
from infra.settings import settings
from infra.supervisor import Program

PROJECTIONS_GROUP = "steno-projections"
BRIDGE_GROUP = "steno-bridge"
PROCESSORS_GROUP = "steno-processors"

# Started in this order and stopped in reverse: the API stops taking requests first, the
# projections stop last so they apply what the others wrote on their way out.
KINDS = (
    Program("projections", "projections", priority=10, stop_grace_s=15),
    Program("processors", "stream_processors", priority=20, stop_grace_s=15, nice=settings.stack.processors_nice),
    Program("bridge", "inference_bridge", priority=30, stop_grace_s=30),
    Program("api", "ingest_api", priority=40, stop_grace_s=10),
)

GROUPS = {"projections": PROJECTIONS_GROUP, "processors": PROCESSORS_GROUP, "bridge": BRIDGE_GROUP}


def programs() -> tuple[Program, ...]:
    """Each kind once, or `stack.instances` times (`api-1`, `api-2`, ...): the consumers of a kind
    share its group, so Kafka splits the partitions between them; each API instance has its own
    port behind the balancer (infra/haproxy.py)."""
    count = settings.stack.instances
    if count == 1:
        return KINDS
    return tuple(_instance(kind, i) for kind in KINDS for i in range(1, count + 1))


def _instance(kind: Program, i: int) -> Program:
    env = {"STENO_API__PORT": str(settings.api.port + i)} if kind.name == "api" else {}
    return replace(kind, name=f"{kind.name}-{i}", instance=i, env=env)


PROGRAMS = programs()


def api_url(program: Program) -> str:
    """Where that API process serves: the configured address, or its instance's port."""
    return f"http://{settings.api.host}:{settings.api.port + program.instance}"


def listens(program: Program) -> str:
    return api_url(program) if program.kind == "api" else f"consumer group {GROUPS[program.kind]}"


def is_healthy(program: Program) -> bool:
    """Alive (supervisord runs it) and serving (its own check passes for that very process)."""
    pid = supervisor.pid(program.name)
    if pid is None:
        return False
    try:
        return _serving(program)(pid)
    except Exception:  # a probe that raises just means "not yet"
        return False


def _serving(program: Program) -> Callable[[int], bool]:
    return _api_ready(api_url(program)) if program.kind == "api" else partial(stable_member, GROUPS[program.kind])


def _api_ready(url: str) -> Callable[[int], bool]:
    def check(_pid: int) -> bool:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200

    return check
