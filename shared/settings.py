"""One typed settings class for every service, read from `MR_*` environment variables."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPARTMENTS: tuple[str, ...] = ("marketing", "pr", "support", "rnd", "product")


class BusKind(StrEnum):
    KAFKA = "kafka"
    MEMORY = "memory"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MR_", env_file=None, extra="ignore")

    bus: BusKind = BusKind.KAFKA
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    kafka_client_id: str = "mention-router"
    # Prefix for every topic and consumer group: isolates tests and tenants sharing a broker.
    topic_prefix: str = ""
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
    producer_linger_ms: int = Field(default=10, ge=0)
    producer_max_batch_size: int = Field(default=262_144, ge=16_384)
    consumer_max_records: int = Field(default=500, ge=1)
    # A message whose handler fails this many times in a row is dead-lettered.
    max_attempts: int = Field(default=3, ge=1)

    database_url: str = f"sqlite+aiosqlite:///{REPO_ROOT / 'var' / 'mention-router.db'}"
    database_pool_size: int = Field(default=5, ge=1)

    taxonomy_file: Path = REPO_ROOT / "config" / "taxonomy.yaml"
    routing_file: Path = REPO_ROOT / "config" / "routing.yaml"

    # ingest
    ingest_default_poll_interval_s: float = Field(default=300.0, gt=0)
    ingest_sources_refresh_s: float = Field(default=5.0, gt=0)
    ingest_http_timeout_s: float = Field(default=15.0, gt=0)
    ingest_max_feed_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    ingest_concurrency: int = Field(default=8, ge=1)
    # file:// sources are for the bundled examples of the embedded default only.
    ingest_allow_file_urls: bool = False

    # api
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_page_size_max: int = 200

    log_level: str = "INFO"
    log_json: bool = False

    def topic(self, name: str) -> str:
        """The full topic name for a logical name such as `mentions.raw`."""
        return f"{self.topic_prefix}{name}"

    def group(self, service: str) -> str:
        return f"{self.topic_prefix}mention-router.{service}"

    @property
    def topic_raw(self) -> str:
        return self.topic("mentions.raw")

    @property
    def topic_classified(self) -> str:
        return self.topic("mentions.classified")

    @property
    def topic_dlq(self) -> str:
        return self.topic("mentions.dlq")

    def topic_routed(self, department: str) -> str:
        return self.topic(f"mentions.routed.{department}")

    def all_topics(self) -> list[str]:
        return [
            self.topic_raw,
            self.topic_classified,
            self.topic_dlq,
            *(self.topic_routed(d) for d in DEPARTMENTS),
        ]
