"""The local Apache Kafka broker: one KRaft node that is both broker and controller (or, in
cluster mode, `settings.kafka.nodes` such nodes on consecutive addresses, one controller quorum).

The jars come from Maven Central (infra/maven/kafka/pom.xml pins the version), so the local
broker is the same software production runs, with no Docker and no tarball download. Everything
it writes lives under the stack folder: jars and config in `.stack/kafka`, the log segments and
the KRaft metadata log in `.stack/data/kafka` (node i of a cluster: `kafka/node-i`, `data/kafka-i`).
"""

from __future__ import annotations

import base64
import socket
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from infra import maven
from infra.process import Service, say
from infra.settings import settings

POM = Path(__file__).resolve().parent / "maven" / "kafka" / "pom.xml"
NODE_ID = 1  # of the first node; node i (0-based) is NODE_ID + i

# Kafka 4 logs through log4j2. Everything goes to stdout, which infra.process sends to the
# service's log file, so there is one place to look when the broker misbehaves.
LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
# Each start would dump every config key several times; server.properties is on disk instead.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
"""


def home() -> Path:
    """Jars and config; rebuilt from the repo at will, unlike the data dir."""
    return settings.stack.root / "kafka"


def libs_dir() -> Path:
    return home() / "libs"


def _clustered() -> bool:
    return settings.kafka.nodes > 1


def node_home(node: int = 0) -> Path:
    """One node's config folder: the home itself for a single node."""
    return home() / f"node-{node + 1}" if _clustered() else home()


def data_dir(node: int = 0) -> Path:
    return settings.stack.data_dir / (f"kafka-{node + 1}" if _clustered() else "kafka")


def name(node: int = 0) -> str:
    """The node's service name (its PID and log file): `kafka`, or `kafka-1`... in a cluster."""
    return f"kafka-{node + 1}" if _clustered() else "kafka"


def nodes() -> range:
    return range(settings.kafka.nodes)


def prepare() -> None:
    """Everything the brokers need before their first start; cheap when already done."""
    maven.fetch_jars("kafka", POM, libs_dir())
    for node in nodes():
        write_config(node)
        format_storage(node)


def write_config(node: int = 0) -> None:
    """Write server.properties and the log4j2 config; rewritten on every start so they follow settings."""
    node_home(node).mkdir(parents=True, exist_ok=True)
    properties = "".join(f"{key}={value}\n" for key, value in server_properties(node).items())
    (node_home(node) / "server.properties").write_text(properties)
    (home() / "log4j2.properties").write_text(LOG4J2)


def server_properties(node: int = 0) -> dict[str, str]:
    """A combined broker+controller node, tuned for one small machine and for explicit topic management."""
    k = settings.kafka
    host = k.node_host(node)
    replicas, min_isr = str(k.replication_factor), str(k.min_insync_replicas)
    return {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID + node),
        **_quorum(),
        "listeners": f"PLAINTEXT://{host}:{k.port},CONTROLLER://{host}:{k.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{k.port},CONTROLLER://{host}:{k.controller_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir(node)),
        # Topics are created on purpose, with their partition counts (ensure_topics): a typo in
        # a topic name must fail loudly, not create a one-partition topic.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        # Internal topics replicated like steno's own (one replica on a single node).
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "broker.session.timeout.ms": str(k.broker_session_timeout_ms),
        "broker.heartbeat.interval.ms": str(k.broker_heartbeat_ms),
        # Tests and `make up` start consumers one by one: don't make each group wait 3 s.
        "group.initial.rebalance.delay.ms": "0",
        # A group's committed offsets are its place in the log. steno's groups start at the
        # beginning when they have none (so nothing sent before a first commit is skipped); had
        # the default 7 days of an empty group expired them, the processors would answer every
        # message ever sent again. A year: an outage is never that long.
        "offsets.retention.minutes": str(365 * 24 * 60),
        # Two cores: the defaults' thread counts only add context switches.
        "num.network.threads": "2",
        "num.io.threads": "4",
    }


def _quorum() -> dict[str, str]:
    """One node is its own controller quorum (formatted --standalone); a cluster's nodes are all
    voters, named statically (every node formatted with the same cluster id)."""
    k = settings.kafka
    if not _clustered():
        return {"controller.quorum.bootstrap.servers": f"{k.host}:{k.controller_port}"}
    voters = (f"{NODE_ID + node}@{k.node_host(node)}:{k.controller_port}" for node in nodes())
    return {"controller.quorum.voters": ",".join(voters)}


def format_storage(node: int = 0) -> None:
    """Format the KRaft metadata log, on the first start only: the tool refuses a formatted dir."""
    if (data_dir(node) / "meta.properties").is_file():
        return
    data_dir(node).mkdir(parents=True, exist_ok=True)
    say(f"kafka: formatting KRaft storage in {data_dir(node)}")
    result = subprocess.run(
        [
            *_java(),
            "kafka.tools.StorageTool",
            "format",
            "--config",
            str(node_home(node) / "server.properties"),
            f"--cluster-id={_cluster_id()}",  # one token: a random id may begin with "-"
            # a single node alone is the initial controller quorum; a cluster's voters are configured
            *([] if _clustered() else ["--standalone"]),
        ],
        capture_output=True,  # the tool dumps its whole config at INFO: show it only on failure
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


def _cluster_id() -> str:
    """The id every node of this stack is formatted with: new for a single node; a cluster's is
    made once and kept beside the data, so a node formatted later joins the same cluster."""
    if not _clustered():
        return _new_cluster_id()
    kept = settings.stack.data_dir / "kafka-cluster.id"
    if not kept.is_file():
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(_new_cluster_id())
    return kept.read_text().strip()


def _new_cluster_id() -> str:
    """A random id in Kafka's own format (URL-safe base64 of 16 bytes, no padding)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _java(heap: str = "256m") -> list[str]:
    """The JVM command line shared by the broker and the storage tool."""
    return [
        "java",
        f"-Xms{heap}",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",  # a broker out of memory should die and say so, not limp
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={home() / 'log4j2.properties'}",
        "-cp",
        f"{libs_dir()}/*",
    ]


def service(node: int = 0) -> Service:
    """A broker as a process for infra.process to start, health-check and stop."""
    return Service(
        name=name(node),
        argv=[*_java(settings.kafka.heap), "kafka.Kafka", str(node_home(node) / "server.properties")],
        healthy=lambda: healthy(node),
        listens=f"{settings.kafka.node_host(node)}:{settings.kafka.port}",
        stop_timeout_s=60.0,  # a clean shutdown flushes and avoids log recovery on the next start
    )


def services() -> list[Service]:
    return [service(node) for node in nodes()]


def healthy(node: int = 0) -> bool:
    """True when the broker answers a metadata request and lists itself among the brokers.

    The TCP probe first keeps librdkafka from logging "connection refused" on every poll while
    the JVM is still starting.
    """
    address = (settings.kafka.node_host(node), settings.kafka.port)
    try:
        with socket.create_connection(address, timeout=1):
            pass
    except OSError:
        return False
    metadata = _admin(f"{address[0]}:{address[1]}").list_topics(timeout=5)
    return NODE_ID + node in metadata.brokers


def ensure_topics(specs: Mapping[str, int], configs: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """Create each missing topic with its partition count (and optional topic configs).

    Idempotent, so `make up` can call it every time. A topic that exists with a different
    partition count is an error, not a silent pass: keys map to partitions by count, so a
    changed count would scatter one conversation's events over several partitions.
    """
    admin = _admin()
    existing = admin.list_topics(timeout=10).topics
    for topic, partitions in specs.items():
        if topic in existing and len(existing[topic].partitions) != partitions:
            raise RuntimeError(
                f"topic {topic!r} has {len(existing[topic].partitions)} partitions, "
                f"wanted {partitions}; delete it (or the Kafka data dir) to recreate it"
            )
    missing = [
        NewTopic(
            topic,
            num_partitions=partitions,
            replication_factor=settings.kafka.replication_factor,
            config={"min.insync.replicas": str(settings.kafka.min_insync_replicas), **(configs or {}).get(topic, {})},
        )
        for topic, partitions in specs.items()
        if topic not in existing
    ]
    if not missing:
        return
    for topic, future in admin.create_topics(missing, operation_timeout=30).items():
        try:
            future.result(timeout=60)
            say(f"kafka: created topic {topic}")
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # else: lost a race, fine
                raise


def _admin(bootstrap: str | None = None) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap or settings.kafka.bootstrap})
