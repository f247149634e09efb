"""The local Apache Kafka broker: one KRaft node that is both broker and controller.

The jars come from Maven Central (infra/maven/kafka/pom.xml pins the version), so the local
broker is the same software production runs, with no Docker and no tarball download. Everything
it writes lives under the stack folder: jars and config in `.stack/kafka`, the log segments and
the KRaft metadata log in `.stack/data/kafka`.
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
NODE_ID = 1

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


def data_dir() -> Path:
    return settings.stack.data_dir / "kafka"


def prepare() -> None:
    """Everything the broker needs before its first start; cheap when already done."""
    maven.fetch_jars("kafka", POM, libs_dir())
    write_config()
    format_storage()


def write_config() -> None:
    """Write server.properties and the log4j2 config; rewritten on every start so they follow settings."""
    home().mkdir(parents=True, exist_ok=True)
    (home() / "server.properties").write_text("".join(f"{key}={value}\n" for key, value in server_properties().items()))
    (home() / "log4j2.properties").write_text(LOG4J2)


def server_properties() -> dict[str, str]:
    """A single combined node, tuned for one small machine and for explicit topic management."""
    k = settings.kafka
    return {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.bootstrap.servers": f"{k.host}:{k.controller_port}",
        "listeners": f"PLAINTEXT://{k.host}:{k.port},CONTROLLER://{k.host}:{k.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{k.host}:{k.port},CONTROLLER://{k.host}:{k.controller_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir()),
        # Topics are created on purpose, with their partition counts (ensure_topics): a typo in
        # a topic name must fail loudly, not create a one-partition topic.
        "auto.create.topics.enable": "false",
        "num.partitions": "1",
        # One node, so every internal topic has one replica.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
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


def format_storage() -> None:
    """Format the KRaft metadata log, on the first start only: the tool refuses a formatted dir."""
    if (data_dir() / "meta.properties").is_file():
        return
    data_dir().mkdir(parents=True, exist_ok=True)
    say(f"kafka: formatting KRaft storage in {data_dir()}")
    result = subprocess.run(
        [
            *_java(),
            "kafka.tools.StorageTool",
            "format",
            "--config",
            str(home() / "server.properties"),
            f"--cluster-id={_new_cluster_id()}",  # one token: a random id may begin with "-"
            "--standalone",
        ],  # this node alone is the initial controller quorum
        capture_output=True,  # the tool dumps its whole config at INFO: show it only on failure
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


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


def service() -> Service:
    """The broker as a process for infra.process to start, health-check and stop."""
    return Service(
        name="kafka",
        argv=[*_java(settings.kafka.heap), "kafka.Kafka", str(home() / "server.properties")],
        healthy=healthy,
        listens=settings.kafka.bootstrap,
        stop_timeout_s=60.0,  # a clean shutdown flushes and avoids log recovery on the next start
    )


def healthy() -> bool:
    """True when the broker answers a metadata request and lists itself among the brokers.

    The TCP probe first keeps librdkafka from logging "connection refused" on every poll while
    the JVM is still starting.
    """
    try:
        with socket.create_connection((settings.kafka.host, settings.kafka.port), timeout=1):
            pass
    except OSError:
        return False
    metadata = _admin().list_topics(timeout=5)
    return NODE_ID in metadata.brokers


def ensure_topics(specs: Mapping[str, int], configs: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """Create each missing topic with its partition count (and optional topic configs).

    Idempotent, so `make up` can call it every time. A topic that exists with a different
    partition count is an error, not a silent pass: keys map to partitions by count, so a
    changed count would scatter one conversation's events over several partitions.
    """
    admin = _admin()
    existing = admin.list_topics(timeout=10).topics
    for name, partitions in specs.items():
        if name in existing and len(existing[name].partitions) != partitions:
            raise RuntimeError(
                f"topic {name!r} has {len(existing[name].partitions)} partitions, "
                f"wanted {partitions}; delete it (or the Kafka data dir) to recreate it"
            )
    missing = [
        NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict((configs or {}).get(name, {})))
        for name, partitions in specs.items()
        if name not in existing
    ]
    if not missing:
        return
    for name, future in admin.create_topics(missing, operation_timeout=30).items():
        try:
            future.result(timeout=60)
            say(f"kafka: created topic {name}")
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # else: lost a race, fine
                raise


def _admin() -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
