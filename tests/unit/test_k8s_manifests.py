"""infra/k8s, validated offline: rendered with kustomize, checked with `kubeconform -strict` against
the JSON schemas kept in infra/k8s/schemas only (no network, no cluster), and held to steno's own
contract: the topics of schemas/topics.py, the consumer groups of infra/app_services.py, replicas
no more than partitions, probes and resources on every steno process.

This is validation of the manifests, not a deployment test: nothing here starts a pod.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from infra import app_services
from infra.k8s import tools
from infra.k8s import topics as k8s_topics
from infra.settings import REPO_ROOT, Settings, settings
from schemas import topics

K8S_DIR = REPO_ROOT / "infra" / "k8s"
SCHEMA_DIR = K8S_DIR / "schemas"
SCHEMA_LOCATION = str(SCHEMA_DIR / "{{ .ResourceKind }}{{ .KindSuffix }}.json")
TARGETS = ("base", "overlays/example")
Resource = dict[str, Any]


@pytest.fixture(scope="module", autouse=True)
def built_tools() -> None:
    """Build kustomize and kubeconform on a machine that has none yet (`make test` does it first)."""
    tools.main()


def render(target: str) -> str:
    result = subprocess.run(
        [str(tools.path(tools.KUSTOMIZE)), "build", str(K8S_DIR / target)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kustomize build {target} failed:\n{result.stderr}"
    return result.stdout


def kubeconform(manifests: str) -> dict[str, Any]:
    """kubeconform's JSON report; strict, offline, and never skipping a kind it has no schema for."""
    command = [
        str(tools.path(tools.KUBECONFORM)),
        "-strict",
        "-summary",
        "-output=json",
        f"-schema-location={SCHEMA_LOCATION}",
        "-",
    ]
    result = subprocess.run(command, input=manifests, capture_output=True, text=True, timeout=60)
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return {target: render(target) for target in TARGETS}


@pytest.fixture(scope="module")
def overlay(rendered: dict[str, str]) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(rendered["overlays/example"]) if doc]


def of_kind(resources: list[Resource], kind: str) -> Iterator[Resource]:
    return (r for r in resources if r["kind"] == kind)


def named(resources: list[Resource], kind: str, name: str) -> Resource:
    [found] = [r for r in of_kind(resources, kind) if r["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize("target", TARGETS)
def test_every_resource_is_valid_against_the_kept_schemas(rendered: dict[str, str], target: str) -> None:
    report = kubeconform(rendered[target])
    problems = [r for r in report["resources"] if r["status"] != "statusValid"]
    assert problems == [], f"{target}: {json.dumps(problems, indent=1)}"
    summary = report["summary"]
    assert summary["invalid"] == 0 and summary["errors"] == 0 and summary["skipped"] == 0
    assert summary["valid"] == len([d for d in yaml.safe_load_all(rendered[target]) if d]) > 0


def test_strict_validation_refuses_a_misspelt_field_and_an_unknown_kind(rendered: dict[str, str]) -> None:
    """The kept schemas bite: an unknown field fails (additionalProperties: false), and a kind with
    no schema file is an error, not a skip."""
    misspelt = rendered["base"].replace("readinessProbe:", "readinesProbe:", 1)
    unknown = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n"
    assert kubeconform(misspelt)["summary"]["invalid"] == 1
    assert kubeconform(unknown)["summary"]["errors"] == 1


def test_committed_kafka_topics_are_current() -> None:
    assert k8s_topics.OUT_FILE.read_text() == k8s_topics.rendered(), (
        f"{k8s_topics.OUT_FILE} is stale: run `python -m infra.k8s.topics`"
    )


def test_kafka_topics_are_the_contract_at_replication_factor_3(overlay: list[Resource]) -> None:
    kafka_topics = {t["spec"]["topicName"]: t["spec"] for t in of_kind(overlay, "KafkaTopic")}
    assert kafka_topics.keys() == {t.name for t in topics.ALL}
    for topic in topics.ALL:
        spec = kafka_topics[topic.name]
        assert spec["partitions"] == topic.partitions
        assert spec["replicas"] == 3
        assert spec["config"]["retention.ms"] == str(topic.retention_ms)
        assert spec["config"]["min.insync.replicas"] == "2"


def test_kafka_replicates_like_the_design_says(overlay: list[Resource]) -> None:
    config = named(overlay, "Kafka", "steno")["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    assert config["offsets.retention.minutes"] == 365 * 24 * 60  # as infra/kafka.py's local broker
    brokers = [p for p in of_kind(overlay, "KafkaNodePool") if "broker" in p["spec"]["roles"]]
    assert sum(p["spec"]["replicas"] for p in brokers) >= 3


def steno_env(overlay: list[Resource]) -> dict[str, str]:
    [env] = [c for c in of_kind(overlay, "ConfigMap") if c["metadata"]["name"].startswith("steno-env")]
    data: dict[str, str] = env["data"]
    return data


def test_the_keyspace_is_replicated_3_times_over_the_datacenter(overlay: list[Resource]) -> None:
    [datacenter] = of_kind(overlay, "CassandraDatacenter")
    assert datacenter["spec"]["size"] == 3 and len(datacenter["spec"]["racks"]) == 3
    env = steno_env(overlay)
    assert env["STENO_CASSANDRA__DATACENTER"] == datacenter["metadata"]["name"]
    assert env["STENO_CASSANDRA__REPLICATION_FACTOR"] == "3"  # infra.migrate creates the keyspace from these
    assert env["STENO_CASSANDRA__CONSISTENCY"] == "LOCAL_QUORUM"
    [migrate] = named(overlay, "Job", "steno-migrate")["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["python", "-m", "infra.migrate"]
    assert migrate["envFrom"] == [{"configMapRef": {"name": named_like(overlay, "ConfigMap", "steno-env")}}]


def named_like(resources: list[Resource], kind: str, prefix: str) -> str:
    """The generated name (with kustomize's hash suffix) of the one resource named `prefix-…`."""
    [name] = [r["metadata"]["name"] for r in of_kind(resources, kind) if r["metadata"]["name"].startswith(prefix)]
    return name


def test_steno_accepts_its_kubernetes_settings(overlay: list[Resource], monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings steno-env gives every process load, and name the in-cluster Services."""
    for key, value in steno_env(overlay).items():
        monkeypatch.setenv(key, value)
    loaded = Settings()
    assert loaded.redis.url == "redis://valkey:6379/0"
    assert loaded.triton.bridge_endpoints == json.loads(steno_env(overlay)["STENO_TRITON__ENDPOINTS"])
    assert loaded.kafka.bootstrap == "steno-kafka-bootstrap:9092"
    assert loaded.cassandra.hosts == ["steno-dc1-service"]


def steno_deployments(overlay: list[Resource]) -> dict[str, Resource]:
    """Module run (`python -m X`) → its Deployment."""
    found = {}
    for deployment in of_kind(overlay, "Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        if container["command"][:2] == ["python", "-m"]:
            found[container["command"][2]] = deployment
    return found


def test_every_steno_process_runs_with_probes_resources_and_a_disruption_budget(overlay: list[Resource]) -> None:
    deployments = steno_deployments(overlay)
    assert deployments.keys() == {p.module for p in app_services.PROGRAMS}
    budgets = {json.dumps(p["spec"]["selector"], sort_keys=True) for p in of_kind(overlay, "PodDisruptionBudget")}
    for module, deployment in deployments.items():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in container, f"{module} has no {probe}"
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), module
        assert "memory" in container["resources"]["limits"], module
        assert json.dumps(deployment["spec"]["selector"], sort_keys=True) in budgets, f"{module} has no PDB"


def test_consumers_are_probed_as_members_of_their_own_group(overlay: list[Resource]) -> None:
    deployments = steno_deployments(overlay)
    for program in app_services.PROGRAMS:
        if program.name not in app_services.GROUPS:
            continue
        [container] = deployments[program.module]["spec"]["template"]["spec"]["containers"]
        expected = ["python", "-m", "infra.k8s.probe", app_services.GROUPS[program.name]]
        assert container["livenessProbe"]["exec"]["command"] == expected, program.name


def test_the_api_probes_its_health_endpoints_and_gets_the_jwt_secret(overlay: list[Resource]) -> None:
    [container] = steno_deployments(overlay)["ingest_api"]["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    [secret_env] = [e for e in container["env"] if e["name"] == "STENO_API__JWT_SECRET"]
    ref = secret_env["valueFrom"]["secretKeyRef"]
    assert ref["key"] in named(overlay, "Secret", ref["name"])["data"]


def topic_named(name: str) -> topics.Topic:
    [topic] = [t for t in topics.ALL if t.name == name]
    return topic


def test_lag_autoscaling_stays_within_the_partitions_of_each_group(overlay: list[Resource]) -> None:
    namespace = named(overlay, "Kafka", "steno")["metadata"]["namespace"]
    deployments = {d["metadata"]["name"]: d for d in of_kind(overlay, "Deployment")}
    scaled = {}
    for scaled_object in of_kind(overlay, "ScaledObject"):
        [trigger] = scaled_object["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["bootstrapServers"] == f"steno-kafka-bootstrap.{namespace}.svc:9092"
        assert scaled_object["spec"]["minReplicaCount"] >= 2
        assert scaled_object["spec"]["maxReplicaCount"] <= topic_named(meta["topic"]).partitions
        target = deployments[scaled_object["spec"]["scaleTargetRef"]["name"]]
        [container] = target["spec"]["template"]["spec"]["containers"]
        scaled[container["command"][2]] = meta["consumerGroup"]
    expected = {p.module: app_services.GROUPS[p.name] for p in app_services.PROGRAMS if p.name in app_services.GROUPS}
    assert scaled == expected


def test_the_api_sits_behind_an_sse_ready_ingress_and_a_cpu_autoscaler(overlay: list[Resource]) -> None:
    annotations = named(overlay, "Ingress", "steno")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    [hpa] = of_kind(overlay, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == steno_deployments(overlay)["ingest_api"]["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2


def test_settings_point_at_the_in_cluster_services_and_every_triton_server(overlay: list[Resource]) -> None:
    env = steno_env(overlay)
    services = {s["metadata"]["name"] for s in of_kind(overlay, "Service")}
    assert env["STENO_REDIS__HOST"] in services
    assert env["STENO_KAFKA__HOST"] == "steno-kafka-bootstrap"  # Strimzi's name for cluster `steno`
    [datacenter] = of_kind(overlay, "CassandraDatacenter")
    cluster, dc = datacenter["spec"]["clusterName"], datacenter["metadata"]["name"]
    assert env["STENO_CASSANDRA__HOST"] == f"{cluster}-{dc}-service"  # cass-operator's CQL service
    triton = named(overlay, "StatefulSet", "triton")
    servers = [f"triton-{i}.{triton['spec']['serviceName']}:8001" for i in range(triton["spec"]["replicas"])]
    assert json.loads(env["STENO_TRITON__ENDPOINTS"]) == servers


def test_triton_serves_the_vllm_interface_on_gpus(overlay: list[Resource]) -> None:
    triton = named(overlay, "StatefulSet", "triton")["spec"]["template"]["spec"]
    [container] = triton["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in triton["tolerations"])
    repository = named(overlay, "ConfigMap", "triton-models")["data"]
    served = {key.split(".")[0] for key in repository}
    assert served and served <= settings.models.keys(), "Triton serves a model steno has no settings for"
    for model in served:
        assert 'backend: "vllm"' in repository[f"{model}.config.pbtxt"]
