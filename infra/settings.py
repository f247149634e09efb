"""steno's one typed settings object.

Every component reads its configuration from here. Values come from environment variables
prefixed `STENO_` (nested with `__`, e.g. `STENO_KAFKA__BOOTSTRAP=host:9092`), with defaults
that match the local stack `make up` starts on 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class StackSettings(BaseModel):
    """Where the local servers keep their downloads, data, logs and PID files."""

    root: Path = REPO_ROOT / ".stack"

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
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"


class CassandraSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 9042
    keyspace: str = "steno"
    heap: str = "1G"


class RedisSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 6379

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


class TritonSettings(BaseModel):
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STENO_", env_nested_delimiter="__")

    stack: StackSettings = StackSettings()
    kafka: KafkaSettings = KafkaSettings()
    cassandra: CassandraSettings = CassandraSettings()
    redis: RedisSettings = RedisSettings()
    triton: TritonSettings = TritonSettings()


settings = Settings()
