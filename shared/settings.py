"""One typed settings class for every service, read from `MR_*` environment variables."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPARTMENTS: tuple[str, ...] = ("marketing", "pr", "support", "rnd", "product")


class BusKind(StrEnum):
    KAFKA = "kafka"
    MEMORY = "memory"


class ClassifierEngineKind(StrEnum):
    RULES = "rules"
    LEARNED = "learned"
    CASCADE = "cascade"


class TopicOverride(BaseModel):
    """Partitions and retention of one topic, where they differ from the defaults."""

    partitions: int | None = Field(default=None, ge=1)
    # -1 keeps records forever.
    retention_ms: int | None = Field(default=None, ge=-1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MR_", env_file=None, extra="ignore")

    bus: BusKind = BusKind.KAFKA
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    kafka_client_id: str = "mention-router"
    # Prefix for every topic and consumer group: isolates tests and tenants sharing a broker.
    topic_prefix: str = ""
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
    # Retention of the topics created by a service or `mention-router topics create` (unset: the broker's).
    topic_retention_ms: int | None = Field(default=None, ge=-1)
    # Per topic, by name without the prefix; JSON in the environment, e.g.
    # MR_TOPIC_OVERRIDES='{"mentions.dlq": {"partitions": 1, "retention_ms": 2592000000}}'.
    topic_overrides: dict[str, TopicOverride] = Field(default_factory=dict)
    # 0: a stage sends a whole batch before the producer's sender runs, so batches form without waiting;
    # a linger only adds itself to every hop (make bench: p50 at 50/s 78 ms with 10 ms, 15 ms with 0).
    producer_linger_ms: int = Field(default=0, ge=0)
    producer_max_batch_size: int = Field(default=262_144, ge=16_384)
    consumer_max_records: int = Field(default=500, ge=1)
    # A message whose handler fails this many times in a row is dead-lettered.
    max_attempts: int = Field(default=3, ge=1)

    database_url: str = f"sqlite+aiosqlite:///{REPO_ROOT / 'var' / 'mention-router.db'}"
    database_pool_size: int = Field(default=5, ge=1)

    taxonomy_file: Path = REPO_ROOT / "config" / "taxonomy.yaml"
    routing_file: Path = REPO_ROOT / "config" / "routing.yaml"
    # router: the active rule set lives in the database (seeded from `routing_file` when there is none);
    # every replica checks for a newly activated version this often.
    router_rules_refresh_s: float = Field(default=5.0, gt=0)
    # SLA escalation: how often the router looks for overdue assignments, and how many times one overdue
    # assignment is escalated (each time one priority step up, then again after another SLA period).
    router_escalation_interval_s: float = Field(default=30.0, gt=0)
    router_escalation_max_level: int = Field(default=3, ge=1)
    # Mentions a shadow replay of a candidate rule set looks at, at most.
    rules_replay_max: int = Field(default=10_000, ge=1)
    # Spike alerts (shared/alerts.py), run by the router every `alert_interval_s`: a topic's mentions in the
    # current clock hour against its hourly counts over the previous `alert_baseline_hours`; an alert when
    # the count reaches max(alert_min_count, mean * alert_ratio, mean + alert_stddevs * stddev). No alerts
    # until the database holds `alert_min_history_hours` of mentions (a new install has no "normal" yet).
    alert_interval_s: float = Field(default=60.0, gt=0)
    alert_baseline_hours: int = Field(default=168, ge=1, le=24 * 90)
    alert_min_history_hours: int = Field(default=24, ge=0)
    alert_min_count: int = Field(default=5, ge=1)
    alert_ratio: float = Field(default=3.0, ge=0)
    alert_stddevs: float = Field(default=3.0, ge=0)

    # classifier: `cascade` (the model's fast heads, and its fine-tuned encoder where they are unsure),
    # `learned` (the encoder for every mention) or `rules` (lexicon + taxonomy only: no model, the
    # fastest, but it knows only the taxonomy's words); docs/classifier.md says when to choose which
    classifier_engine: ClassifierEngineKind = ClassifierEngineKind.CASCADE
    classifier_model: Path = REPO_ROOT / "models" / "minilm-v3.npz"
    # threads of the encoder (ONNX Runtime) per classifier process; scale out with processes
    classifier_threads: int = Field(default=1, ge=1, le=64)
    # word pieces the encoder reads of a text (head and tail); None: what the model was trained with
    classifier_max_tokens: int | None = Field(default=None, ge=8, le=512)
    # Exactly-once from mentions.raw to mentions.classified: the classifier publishes and commits its
    # offsets in one Kafka transaction, and Kafka consumers read only committed messages.
    exactly_once: bool = False

    # ingest
    ingest_default_poll_interval_s: float = Field(default=300.0, gt=0)
    ingest_sources_refresh_s: float = Field(default=5.0, gt=0)
    ingest_http_timeout_s: float = Field(default=15.0, gt=0)
    ingest_max_feed_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    ingest_concurrency: int = Field(default=8, ge=1)
    # file:// sources (the bundled examples of `mention-router run`, which turns this on): only sources an
    # operator registered (`sources import`, never the API or a URL found in a feed), and only files under
    # `ingest_file_root` (symbolic links resolved).
    ingest_allow_file_urls: bool = False
    ingest_file_root: Path = REPO_ROOT / "examples"
    # Addresses or CIDR networks a source may resolve to although they are not globally reachable
    # (loopback, private, shared 100.64/10, link-local, unique-local, and 6to4/Teredo/NAT64 addresses
    # wrapping them; comma-separated, e.g. "10.20.0.0/16"); everything else of that kind is refused
    # (SSRF), at registration, at connect time and on every redirect (docs/operations.md).
    ingest_allowed_networks: str = ""
    ingest_per_host_concurrency: int = Field(default=2, ge=1)
    # A replica holds a source for this long while it polls it; another replica may take it after.
    ingest_lease_s: float = Field(default=120.0, gt=0)
    ingest_max_backoff_s: float = Field(default=3600.0, gt=0)
    ingest_discover_comment_feeds: bool = True
    ingest_max_comment_feeds_per_source: int = Field(default=25, ge=0)
    ingest_comment_feed_poll_interval_s: int = Field(default=900, ge=1)
    ingest_near_duplicates: bool = True
    ingest_near_duplicate_window_days: int = Field(default=30, ge=1)

    # api
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_page_size_max: int = 200
    # The most rows one export streams.
    api_export_max_rows: int = Field(default=100_000, ge=1)
    # API keys (services/api/auth.py): off only for development.
    api_auth: bool = True
    # A whole key (`mr_<8 hex>_<secret>`) registered as an admin key at start, for deployments that
    # provision the first key from a secret store; `mention-router keys create` makes keys otherwise.
    api_bootstrap_key: SecretStr | None = None

    @field_validator("api_bootstrap_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    # How long an API process trusts a key it found valid without asking the database again. The process
    # that revokes a key refuses it at once; the other API processes (replicas, or any process when the
    # command line revokes) within this many seconds. 0: the database on every request.
    api_key_cache_s: float = Field(default=10.0, ge=0, le=300)
    # Per key (per anonymous client without keys), per API process: a token bucket.
    api_rate_limit_per_s: float = Field(default=50.0, ge=0)
    api_rate_limit_burst: int = Field(default=200, ge=1)
    # `mention-router run` keeps the admin key it makes on its first run here.
    embedded_key_file: Path = REPO_ROOT / "var" / "admin-api-key"
    # Request bodies above this are refused with 413 before they are read.
    api_max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Origins allowed by CORS (JSON list in the environment); empty: CORS off.
    api_cors_origins: list[str] = Field(default_factory=list)
    # PostgreSQL's max_parallel_workers_per_gather for the API's sessions. 0: the API runs many small
    # queries at once, and parallel workers only took CPU from the others (python -m bench.api_bench:
    # capacity 59 -> 72 requests/s, p99 at 40/s 1.8 s -> 0.37 s on 2 cores); raise it on a machine with
    # cores to spare for the heavy statistics and exports.
    api_database_parallel_workers: int = Field(default=0, ge=0)
    # GET /v1/stream (services/api/stream.py): open streams per API process (more get 503), the seconds
    # between keep-alive comments on a quiet stream, and how often an open stream re-checks its key
    # (revoked, expired or no longer allowed the departments: the stream ends).
    stream_max_clients: int = Field(default=100, ge=1)
    stream_keepalive_s: float = Field(default=15.0, gt=0)
    stream_key_recheck_s: float = Field(default=60.0, gt=0)
    # GET /v1/stats/mentions answers 422 for a window of more buckets than this.
    stats_max_buckets: int = Field(default=1000, ge=1)

    # Outbound webhooks (services/api/webhooks.py): the API process fans routed mentions out to the
    # departments' endpoints and POSTs them (off: another API replica does it, or nobody).
    webhook_worker: bool = True
    # Plain http:// endpoints (development and tests only); otherwise https is required.
    webhook_allow_http: bool = False
    # Like ingest_allowed_networks, for endpoints: addresses that are not globally reachable which an
    # endpoint may resolve to (SSRF); checked at registration and on every connection.
    webhook_allowed_networks: str = ""
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # A delivery is tried this often before it is `dead`; the waits between the attempts (seconds, each
    # ±20 % jitter; the last repeats) — 10 s, 30 s, 2 min, 10 min, 1 h, 3 h, 6 h: about 10 hours in all.
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_retry_schedule_s: list[float] = Field(
        default_factory=lambda: [10.0, 30.0, 120.0, 600.0, 3600.0, 10800.0, 21600.0], min_length=1
    )
    # Requests in flight at once per API process (at most 4 of them to one endpoint).
    webhook_concurrency: int = Field(default=16, ge=1)
    # How often the sender looks for due deliveries when nothing woke it.
    webhook_poll_interval_s: float = Field(default=1.0, gt=0)

    # Every service serves /metrics on this port, never on the API's public port (0: not at all); the
    # stages serve /healthz and /readyz there too. The API's gauges of the departments' queues are
    # computed in the background every `metrics_business_interval_s`, not per scrape.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9100, ge=0, le=65535)
    metrics_business_interval_s: float = Field(default=15.0, ge=1, le=3600)

    log_level: str = "INFO"
    log_json: bool = False

    def topic(self, name: str) -> str:
        """The full topic name for a logical name such as `mentions.raw`."""
        return f"{self.topic_prefix}{name}"

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        # Operators and managed services (CloudNativePG's `uri`, most clouds) hand out plain
        # postgresql:// URLs; the services speak asyncpg.
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+asyncpg://" + url.removeprefix(plain)
        return url

    def topic_spec(self, topic: str) -> tuple[int, int | None]:
        """(partitions, retention in ms or None) for a full topic name."""
        override = self.topic_overrides.get(topic.removeprefix(self.topic_prefix), TopicOverride())
        partitions = override.partitions or self.topic_partitions
        retention = override.retention_ms if override.retention_ms is not None else self.topic_retention_ms
        return partitions, retention

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

    @property
    def topic_escalations(self) -> str:
        return self.topic("mentions.escalations")

    @property
    def topic_alerts(self) -> str:
        return self.topic("mentions.alerts")

    def all_topics(self) -> list[str]:
        return [
            self.topic_raw,
            self.topic_classified,
            self.topic_dlq,
            self.topic_escalations,
            self.topic_alerts,
            *(self.topic_routed(d) for d in DEPARTMENTS),
        ]
