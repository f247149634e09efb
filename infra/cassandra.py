"""Run a real Apache Cassandra 5.0 single node on 127.0.0.1 from the jars on Maven Central (or, in
cluster mode, `settings.cassandra.nodes` nodes on consecutive addresses, the way ccm runs a cluster
on one host: each node its own listen/rpc address, the same ports, JMX on its own port).

There is no Cassandra tarball or Docker image here: Maven fetches `cassandra-all` and its runtime
dependencies once into `.stack/cassandra/lib`, and we start `CassandraDaemon` with the same JVM
flags Cassandra's own `bin/cassandra` + `conf/jvm17-server.options` would use on Java 17, minus
what only matters on big production boxes. Config lives in `infra/conf/cassandra/` (versioned);
everything the node writes lives under `.stack/` (ignored).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from string import Template

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, Session
from cassandra.policies import ExponentialReconnectionPolicy, WhiteListRoundRobinPolicy

from infra import maven
from infra.process import Service
from infra.settings import REPO_ROOT, settings

POM = REPO_ROOT / "infra" / "maven" / "cassandra" / "pom.xml"
CONF_TEMPLATES = REPO_ROOT / "infra" / "conf" / "cassandra"
MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"
RECONNECT_MAX_S = 4.0  # the longest a client waits before trying a node that went away again


# From Cassandra 5.0 conf/jvm17-server.options ("JPMS"): Cassandra reaches into JDK internals
# (Unsafe, direct buffers, attach API for jamm, RMI for JMX); without these Java 17 refuses.
JPMS_FLAGS = [
    "-Djdk.attach.allowAttachSelf=true",
    *(
        f"--add-exports={module}=ALL-UNNAMED"
        for module in (
            "java.base/jdk.internal.misc",
            "java.management.rmi/com.sun.jmx.remote.internal.rmi",
            "java.rmi/sun.rmi.registry",
            "java.rmi/sun.rmi.server",
            "java.sql/java.sql",
            "java.base/java.lang.ref",
            "jdk.unsupported/sun.misc",
            "jdk.compiler/com.sun.tools.javac.file",
            "jdk.attach/sun.tools.attach",
        )
    ),
    *(
        f"--add-opens={module}=ALL-UNNAMED"
        for module in (
            "java.base/java.lang.module",
            "java.base/jdk.internal.loader",
            "java.base/jdk.internal.ref",
            "java.base/jdk.internal.reflect",
            "java.base/jdk.internal.math",
            "java.base/jdk.internal.module",
            "java.base/jdk.internal.util.jar",
            "jdk.management/com.sun.management.internal",
            "java.base/sun.nio.ch",
            "java.base/java.io",
            "java.base/java.lang.reflect",
            "jdk.compiler/com.sun.tools.javac",
            "java.base/java.lang",
            "java.base/java.util",
            "java.base/java.nio",
        )
    ),
]

# G1 as upstream's jvm17-server.options sets it, sized for a 1G dev heap. No -Xmn: with G1 a fixed
# young gen overrides the pause-time goal (upstream's cassandra-env.sh refuses -Xmn with G1), so
# the young gen is instead kept small through G1's own percent bounds.
GC_FLAGS = [
    "-XX:+UseG1GC",
    "-XX:+ParallelRefProcEnabled",
    "-XX:MaxTenuringThreshold=1",
    "-XX:G1RSetUpdatingPauseTimePercent=5",
    "-XX:MaxGCPauseMillis=300",
    "-XX:InitiatingHeapOccupancyPercent=70",
    "-XX:+UnlockExperimentalVMOptions",
    "-XX:G1NewSizePercent=5",
    "-XX:G1MaxNewSizePercent=25",
]

# From jvm-server.options / jvm17-server.options / cassandra-env.sh, the ones that matter here.
# Left out on purpose: -XX:+AlwaysPreTouch (faults in the whole heap at boot: slower start and
# full-heap RSS on a shared dev box), -XX:+UseNUMA, heap dumps of a throwaway dev node.
GENERAL_FLAGS = [
    "-ea",  # upstream runs with assertions on: they guard real invariants
    "-da:net.openhft...",  # ...except Chronicle's, which leak memory by design
    "-XX:+UseThreadPriorities",
    "-Xss256k",
    "-XX:+UseTLAB",
    "-XX:+ResizeTLAB",
    "-XX:+PerfDisableSharedMem",  # no hsperfdata mmap writes stalling GC
    "-XX:+ExitOnOutOfMemoryError",  # a node that OOMed may corrupt data: die, don't limp
    "-Djava.net.preferIPv4Stack=true",
    "-Djdk.nio.maxCachedBufferSize=1048576",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]

# Dev-stack shortcuts: a single node has nothing to gossip with and nobody to wait for.
FAST_START_FLAGS = [
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.shutdown_announce_in_ms=0",  # no peers to tell: stop 2 s sooner
]
# How long a node waits to hear the ring by gossip (Cassandra's default: 30 s). The first node
# has no ring to hear. A joining node bootstraps only once it has heard from a seed, and gives
# up otherwise: at 1 s a cluster node on a busy 2-core machine (the end of a CI run) once failed
# with "Unable to contact any seeds" although connected to the seed for 4 s.
FIRST_NODE_RING_DELAY_MS = 1000
JOINING_NODE_RING_DELAY_MS = 5000


def home() -> Path:
    """Cassandra's install folder under the stack root: jars, rendered config, triggers."""
    return settings.stack.root / "cassandra"


def lib_dir() -> Path:
    return home() / "lib"


def _clustered() -> bool:
    return settings.cassandra.nodes > 1


def conf_dir(node: int = 0) -> Path:
    return home() / (f"conf-{node + 1}" if _clustered() else "conf")


def data_dir(node: int = 0) -> Path:
    return settings.stack.data_dir / (f"cassandra-{node + 1}" if _clustered() else "cassandra")


def name(node: int = 0) -> str:
    """The node's service name (its PID and log file): `cassandra`, or `cassandra-1`... in a cluster."""
    return f"cassandra-{node + 1}" if _clustered() else "cassandra"


def nodes() -> range:
    return range(settings.cassandra.nodes)


def prepare() -> None:
    """Everything `service()` needs on disk: jars (first run only), data folders, config."""
    maven.fetch_jars("cassandra", POM, lib_dir())
    for node in nodes():
        for sub in ("data", "commitlog", "saved_caches", "hints", "cdc_raw"):
            (data_dir(node) / sub).mkdir(parents=True, exist_ok=True)
        write_config(node)
    (home() / "triggers").mkdir(parents=True, exist_ok=True)
    settings.stack.log_dir.mkdir(parents=True, exist_ok=True)


def version() -> str:
    """The cassandra-all version in lib/ (from the jar's file name)."""
    jar = next(lib_dir().glob("cassandra-all-*.jar"))
    return jar.stem.removeprefix("cassandra-all-")


def write_config(node: int = 0) -> None:
    """Render the versioned cassandra.yaml template into .stack/cassandra/conf (paths, ports)."""
    conf_dir(node).mkdir(parents=True, exist_ok=True)
    c = settings.cassandra
    values = {
        "host": c.node_host(node),
        "seed": c.node_host(0),
        "native_port": str(c.port),
        "storage_port": str(c.storage_port),
        "data_dir": str(data_dir(node)),
        "tokens": token_lines(),
        "hints": str(_clustered()).lower(),
    }
    template = Template((CONF_TEMPLATES / "cassandra.yaml").read_text())
    (conf_dir(node) / "cassandra.yaml").write_text(template.substitute(values))


def token_lines() -> str:
    """A single node owns the ring with one fixed token; a cluster's nodes take vnodes, placed
    for the keyspace's replication factor."""
    c = settings.cassandra
    if c.num_tokens == 1:
        return "num_tokens: 1\ninitial_token: 0"
    return f"num_tokens: {c.num_tokens}\nallocate_tokens_for_local_replication_factor: {c.replication_factor}"


def service(node: int = 0) -> Service:
    """A Cassandra node as a steno Service: healthy once CQL answers a query."""
    return Service(
        name=name(node),
        argv=java_argv(node),
        healthy=lambda: healthy(node),
        listens=f"{settings.cassandra.node_host(node)}:{settings.cassandra.port} (CQL)",
        env={"MALLOC_ARENA_MAX": "4"},  # as cassandra-env.sh: fewer glibc arenas, less RSS
        cwd=home(),
        start_timeout_s=180.0,
        stop_timeout_s=60.0,  # SIGTERM drains (flushes memtables) before exiting
        timer_slack_ns=settings.cassandra.timer_slack_ns,
    )


def services() -> list[Service]:
    return [service(node) for node in nodes()]


def java_argv(node: int = 0) -> list[str]:
    """The `java` command line that `bin/cassandra -f` would build, spelled out."""
    return [
        *_without_memory_locking(),
        _java(),
        f"-Xms{settings.cassandra.heap}",
        f"-Xmx{settings.cassandra.heap}",
        *GC_FLAGS,
        *GENERAL_FLAGS,
        *JPMS_FLAGS,
        *_jamm_agent(),
        *FAST_START_FLAGS,
        f"-Dcassandra.ring_delay_ms={JOINING_NODE_RING_DELAY_MS if node else FIRST_NODE_RING_DELAY_MS}",
        f"-Dcassandra.jmx.local.port={settings.cassandra.jmx_port + node}",
        "-Dcom.sun.management.jmxremote.authenticate=false",
        "-Dcassandra-foreground=yes",  # keep stdout/stderr open: they are our log
        f"-Dcassandra.config={(conf_dir(node) / 'cassandra.yaml').as_uri()}",
        f"-Dlogback.configurationFile={CONF_TEMPLATES / 'logback.xml'}",
        f"-Dcassandra.logdir={settings.stack.log_dir}",
        f"-Dcassandra.storagedir={data_dir(node)}",
        f"-Dcassandra.triggers_dir={home() / 'triggers'}",
        "-cp",
        f"{lib_dir()}/*",
        MAIN_CLASS,
    ]


def _without_memory_locking() -> list[str]:
    """A `setpriv` prefix that stops Cassandra pinning its whole heap in RAM when run as root.

    At boot Cassandra calls mlockall(); only root (CAP_IPC_LOCK) gets past the default 8 MiB
    RLIMIT_MEMLOCK, and then every page of the 1G heap is faulted in and locked: ~1.5 GB RSS
    from the first second, instead of ~0.5 GB at boot growing to ~1 GB as the heap gets used.
    A dev node sharing the machine with Kafka and Triton has no use for pinned memory (there is
    no swap to avoid), and a normal user's node already runs unlocked. Dropping the
    capability makes mlockall fail exactly as it does for a normal user (one WARN line,
    "Unable to lock JVM memory (ENOMEM)", which is expected). setpriv execs, so the PID is java's.
    """
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return []
    return ["setpriv", "--bounding-set=-ipc_lock", "--inh-caps=-ipc_lock", "--"]


def _java() -> str:
    """JAVA_HOME's java when set (it must be 11 or 17 for Cassandra 5.0), else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    return str(Path(java_home) / "bin" / "java") if java_home else "java"


def _jamm_agent() -> list[str]:
    """jamm measures object sizes for memtable accounting; upstream loads it as a Java agent."""
    jars = sorted(lib_dir().glob("jamm-*.jar"))
    return [f"-javaagent:{jars[-1]}"] if jars else []


def connect(
    keyspace: str | None = None, timeout_s: float = 10.0, hosts: list[str] | None = None
) -> tuple[Cluster, Session]:
    """A driver session on the local node(s); callers `cluster.shutdown()` when done.

    Pinned to the stack's nodes (white-list policy: a cluster's nodes in turn, skipping one that is
    down), which also keeps the driver from warning about a missing load-balancing policy. Reads
    and writes at `settings.cassandra.consistency`: LOCAL_QUORUM in a cluster, so a read after a
    write sees it whichever nodes answer, and one node down changes nothing.

    A node that went away is tried again every `RECONNECT_MAX_S` at most: the driver's default
    doubles the wait up to 10 minutes, so a node down for 30 s (a restart under load) was found
    again only after ~60 s, and a single node's stack was out for that long.
    """
    hosts = hosts or settings.cassandra.hosts
    profile = ExecutionProfile(
        load_balancing_policy=WhiteListRoundRobinPolicy(hosts),
        request_timeout=timeout_s,
        consistency_level=consistency(),
    )
    cluster = Cluster(
        hosts,
        port=settings.cassandra.port,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=timeout_s,
        control_connection_timeout=timeout_s,
        reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=RECONNECT_MAX_S),
    )
    try:
        return cluster, cluster.connect(keyspace)
    except Exception:
        cluster.shutdown()
        raise


def consistency() -> int:
    """The driver's consistency level named in settings; a misspelt name says which ones exist."""
    try:
        return ConsistencyLevel.name_to_value[settings.cassandra.consistency]
    except KeyError:
        known = ", ".join(ConsistencyLevel.name_to_value)
        raise ValueError(
            f"STENO_CASSANDRA__CONSISTENCY={settings.cassandra.consistency!r} is none of {known}"
        ) from None


def healthy(node: int = 0) -> bool:
    """True once the node serves CQL: the port accepts and `system.local` answers.

    A bare TCP check first keeps the (noisy, slower) driver out of the way while the JVM boots.
    """
    address = (settings.cassandra.node_host(node), settings.cassandra.port)
    try:
        with socket.create_connection(address, timeout=1):
            pass
    except OSError:
        return False
    driver_log = logging.getLogger("cassandra")
    level = driver_log.level
    driver_log.setLevel(logging.CRITICAL)  # connection errors while booting are expected
    try:
        cluster, session = connect(timeout_s=5.0, hosts=[address[0]])
        try:
            return session.execute("SELECT release_version FROM system.local").one() is not None
        finally:
            cluster.shutdown()
    finally:
        driver_log.setLevel(level)


def nodetool_argv(*args: str, node: int = 0) -> list[str]:
    """`nodetool ARGS` without a Cassandra tarball: NodeTool from lib/, over the node's local JMX port."""
    return [
        _java(),
        "-Xmx128m",
        *JPMS_FLAGS,
        f"-Dlogback.configurationFile={CONF_TEMPLATES / 'logback.xml'}",
        "-cp",
        f"{lib_dir()}/*",
        "org.apache.cassandra.tools.NodeTool",
        "-h",
        "127.0.0.1",  # local JMX listens on loopback, whatever the node's address
        "-p",
        str(settings.cassandra.jmx_port + node),
        *args,
    ]


def main(argv: list[str] | None = None) -> None:
    """`python -m infra.cassandra nodetool status` (any nodetool command) for debugging."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "nodetool":
        raise SystemExit("usage: python -m infra.cassandra nodetool <command> [args...]")
    command = nodetool_argv(*args[1:])
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
