"""The cluster stack is what the cluster mode promises: replicated topics and keyspace, quorum
reads and writes, every node and instance serving; the single-node defaults stay as they were."""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest
from cassandra import ConsistencyLevel
from confluent_kafka.admin import AdminClient, ConfigResource

from infra import app_services, cassandra, haproxy, stack, supervisor, triton
from infra.settings import REPO_ROOT, Settings, settings
from schemas import topics
from tests.chaos.faults import MODULES, steno_pids
from tests.cluster.conftest import STENO, timeout

pytestmark = [pytest.mark.cluster, pytest.mark.integration, timeout(60)]


def test_every_steno_topic_has_three_replicas_and_needs_two_in_sync() -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    metadata = admin.list_topics(timeout=10)
    assert sorted(metadata.brokers) == [1, 2, 3]
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topic.name) for topic in topics.ALL]
    for resource, future in admin.describe_configs(resources).items():
        replicas = {len(p.replicas) for p in metadata.topics[resource.name].partitions.values()}
        assert replicas == {3}, resource.name
        assert future.result(timeout=10)["min.insync.replicas"].value == "2", resource.name


def test_the_keyspace_is_replicated_on_three_nodes_read_and_written_at_local_quorum() -> None:
    cluster, session = cassandra.connect()
    try:
        row = session.execute(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", [settings.cassandra.keyspace]
        ).one()
        peers = session.execute("SELECT peer, tokens FROM system.peers").all()
        profile = cluster.profile_manager.default
    finally:
        cluster.shutdown()
    assert row.replication == {
        "class": "org.apache.cassandra.locator.NetworkTopologyStrategy",
        settings.cassandra.datacenter: "3",
    }
    assert len(peers) == 2 and all(len(p.tokens) == 16 for p in peers)
    assert profile.consistency_level == ConsistencyLevel.LOCAL_QUORUM


def test_every_server_and_instance_serves() -> None:
    assert [s.name for s in stack.servers()] == [
        "redis",
        *(f"kafka-{i}" for i in (1, 2, 3)),
        *(f"cassandra-{i}" for i in (1, 2, 3)),
        "triton-1",
        "triton-2",
        "haproxy",
    ]
    assert all(triton.models_ready(server) for server in range(2))
    assert settings.triton.bridge_endpoints == ["127.0.0.21:8001", "127.0.0.22:8001"]
    for program in app_services.PROGRAMS:
        assert app_services.is_healthy(program), program.name
    assert [f"127.0.0.10:{p}" for p in haproxy.instance_ports()] == ["127.0.0.10:8081", "127.0.0.10:8082"]
    assert httpx.get(f"{settings.api.url}/readyz", timeout=5).status_code == 200


def test_the_single_node_defaults_are_unchanged_without_the_profile() -> None:
    single = Settings(_env_file=None)  # type: ignore[call-arg]  # pydantic-settings init option, unknown to mypy
    assert single.stack.instances == 1 and single.stack.root.name == ".stack"
    assert single.kafka.bootstrap == "127.0.0.1:9092" and single.kafka.replication_factor == 1
    assert single.cassandra.hosts == ["127.0.0.1"] and single.cassandra.consistency == "LOCAL_ONE"
    assert single.triton.bridge_endpoints == ["127.0.0.1:8001"]
    assert single.api.url == "http://127.0.0.1:8080"


def test_steno_commands_take_the_cluster_profile_from_the_flag() -> None:
    without_profile = {key: value for key, value in os.environ.items() if key != "STENO_PROFILE"}
    status = subprocess.run(
        [STENO, "status", "--cluster"], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=without_profile
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert "127.0.0.13:9092" in status.stdout and "api-2" in status.stdout


def test_the_chaos_faults_find_only_this_stacks_processes() -> None:
    """The single-node stack runs the same modules beside the cluster: a fault must not reach them."""
    for kind in MODULES:
        instances = [p.name for p in app_services.PROGRAMS if p.kind == kind]
        pids = {supervisor.pid(name) for name in instances}
        assert None not in pids and set(steno_pids(kind)) == pids, kind
