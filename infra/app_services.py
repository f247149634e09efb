"""steno's own processes, run by `make up` beside the servers they use.

Each one is healthy when it really serves: the API answers /readyz, and every consumer has
joined its Kafka consumer group (it has partitions and is reading).
"""

from __future__ import annotations

import sys

import httpx
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from infra.process import Service
from infra.settings import REPO_ROOT, settings

PROJECTIONS_GROUP = "steno-projections"
BRIDGE_GROUP = "steno-bridge"
PROCESSORS_GROUP = "steno-processors"


def services() -> list[Service]:
    return [
        _python_service(
            "projections", "projections", _group_is_stable(PROJECTIONS_GROUP), "consumer group " + PROJECTIONS_GROUP
        ),
        _python_service(
            "processors", "stream_processors", _group_is_stable(PROCESSORS_GROUP), "consumer group " + PROCESSORS_GROUP
        ),
        _python_service("bridge", "inference_bridge", _group_is_stable(BRIDGE_GROUP), "consumer group " + BRIDGE_GROUP),
        _python_service("api", "ingest_api", _api_ready, settings.api.url),
    ]


def _python_service(name: str, module: str, healthy, listens: str) -> Service:
    return Service(
        name=name,
        argv=[sys.executable, "-m", module],
        healthy=healthy,
        listens=listens,
        cwd=REPO_ROOT,
        env={"PYTHONUNBUFFERED": "1"},
        start_timeout_s=90,
    )


def _api_ready() -> bool:
    return httpx.get(f"{settings.api.url}/readyz", timeout=2).status_code == 200


def _group_is_stable(group_id: str):
    def check() -> bool:
        admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap, "log_level": 0})
        [description] = [f.result(timeout=5) for f in admin.describe_consumer_groups([group_id]).values()]
        return description.state == ConsumerGroupState.STABLE and len(description.members) > 0

    return check
