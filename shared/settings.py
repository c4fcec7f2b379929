"""One typed settings class for every service, read from `MR_*` environment variables."""

# size: one declarative class with a described field per setting (docs/configuration.md is generated from
# it); splitting it would scatter the reference, not simplify it.

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


class KafkaSecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    # SASL without TLS: credentials and records in the clear, for local development only.
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class KafkaSaslMechanism(StrEnum):
    SCRAM_SHA_512 = "SCRAM-SHA-512"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    PLAIN = "PLAIN"


class TopicOverride(BaseModel):
    """Partitions and retention of one topic, where they differ from the defaults."""

    partitions: int | None = Field(default=None, ge=1)
    # -1 keeps records forever.
    retention_ms: int | None = Field(default=None, ge=-1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MR_", env_file=None, extra="ignore")

    bus: BusKind = Field(
        default=BusKind.KAFKA,
        description=(
            "`kafka`, or `memory` (the in-process bus `mention-router run` always uses; it does not outlive "
            "the process)."
        ),
    )
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:19092",
        description="Kafka brokers, comma-separated host:port.",
    )
    kafka_client_id: str = Field(
        default="mention-router",
        description="The client id every Kafka client of the services reports to the broker.",
    )
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        default=KafkaSecurityProtocol.PLAINTEXT,
        description=(
            "`PLAINTEXT` (no authentication: a broker only the services can reach), `SASL_SSL` (a user and "
            "password over TLS: what a shared broker needs, every client with its own principal and ACLs, "
            "see docs/operations.md) or `SASL_PLAINTEXT` (the same without TLS, for local development only)."
        ),
    )
    kafka_sasl_mechanism: KafkaSaslMechanism = Field(
        default=KafkaSaslMechanism.SCRAM_SHA_512,
        description="The SASL mechanism: `SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN`.",
    )
    kafka_sasl_username: str = Field(
        default="",
        description=(
            "This process's Kafka user (its principal is `User:<name>`): one per service, e.g. `mr-router`; "
            "required with SASL."
        ),
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None,
        description="The Kafka user's password (or `MR_KAFKA_SASL_PASSWORD_FILE`); never logged.",
    )
    kafka_sasl_password_file: Path | None = Field(
        default=None,
        description=(
            "A file holding the Kafka user's password (a mounted Secret), read when a client connects; "
            "instead of `MR_KAFKA_SASL_PASSWORD`."
        ),
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description=(
            "The CA certificates (PEM) that sign the brokers' certificates, for `SASL_SSL` (unset: the "
            "system's trusted CAs)."
        ),
    )
    kafka_service_users: dict[str, str] = Field(
        default_factory=lambda: {s: f"mr-{s}" for s in ("ingest", "classifier", "router", "api")},
        description=(
            "The Kafka user of each service, for `mention-router kafka acls`, which grants each one what "
            "its service reads and writes (JSON)."
        ),
    )
    kafka_department_users: dict[str, str] = Field(
        default_factory=lambda: {d: f"dept-{d}" for d in DEPARTMENTS},
        description=(
            "The Kafka user of each department's consumer, for `mention-router kafka acls`: it may read its "
            "department's `mentions.routed.<department>` and use consumer groups named `<department>.*` "
            "(with the topic prefix), nothing else (JSON)."
        ),
    )
    topic_prefix: str = Field(
        default="",
        description="Prefix for every topic and consumer group: isolates tenants or tests sharing a broker.",
    )
    topic_partitions: int = Field(
        description=(
            "Partitions of the topics `mention-router topics create` (or a service) creates; the most "
            "consumers of one stage that share the work."
        ),
        default=4,
        ge=1,
    )
    topic_replication_factor: int = Field(
        description="Replication factor of the topics created.", default=1, ge=1
    )
    topic_retention_ms: int | None = Field(
        description=(
            "Retention of the topics created (unset: the broker's default; -1 keeps records forever)."
        ),
        default=None,
        ge=-1,
    )
    topic_overrides: dict[str, TopicOverride] = Field(
        description=(
            'Partitions and retention per topic, by name without the prefix; JSON, e.g. `{"mentions.dlq": '
            '{"partitions": 1, "retention_ms": 2592000000}}`.'
        ),
        default_factory=dict,
    )
    producer_linger_ms: int = Field(
        description=(
            "Producer linger. 0: a stage sends a whole batch before the producer's sender runs, so batches "
            "form without waiting; a linger only adds itself to every hop (make bench: p50 at 50/s 78 ms "
            "with 10 ms, 15 ms with 0)."
        ),
        default=0,
        ge=0,
    )
    producer_max_batch_size: int = Field(
        description="The largest producer batch, in bytes.", default=262_144, ge=16_384
    )
    consumer_max_records: int = Field(
        description="The most records a stage takes from Kafka in one batch.", default=500, ge=1
    )
    max_attempts: int = Field(
        description=(
            "Tries before a record whose handler keeps failing is isolated and dead-lettered to "
            "`mentions.dlq`."
        ),
        default=3,
        ge=1,
    )

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{REPO_ROOT / 'var' / 'mention-router.db'}",
        description=(
            "The database: `postgresql+asyncpg://user:pass@host/db` (a plain `postgresql://` URL is "
            "accepted) or SQLite (`sqlite+aiosqlite:///path`, the embedded default's "
            "`var/mention-router.db`)."
        ),
    )
    database_pool_size: int = Field(description="Database connections per process.", default=5, ge=1)

    taxonomy_file: Path = Field(
        default=REPO_ROOT / "config" / "taxonomy.yaml",
        description=(
            "The topic taxonomy (topics, their words, their departments); the classifier reloads it when it "
            "changes."
        ),
    )
    routing_file: Path = Field(
        default=REPO_ROOT / "config" / "routing.yaml",
        description=(
            "The routing rules that seed the database on the router's first start (version 1); after that "
            "rule sets are edited through the API."
        ),
    )
    router_rules_refresh_s: float = Field(
        description=(
            "How often each router replica checks for a newly activated rule set (it switches between two "
            "batches)."
        ),
        default=5.0,
        gt=0,
    )
    router_escalation_interval_s: float = Field(
        description="How often the router looks for assignments past their SLA without a first response.",
        default=30.0,
        gt=0,
    )
    router_escalation_max_level: int = Field(
        description=(
            "How many times one overdue assignment is escalated (one priority step up each time, again after "
            "another SLA period)."
        ),
        default=3,
        ge=1,
    )
    rules_replay_max: int = Field(
        description="The most stored mentions one shadow replay of a candidate rule set looks at.",
        default=10_000,
        ge=1,
    )
    alert_interval_s: float = Field(
        description=(
            "How often each router replica looks for spikes: a topic's mentions in the current clock hour "
            "against its hourly counts before."
        ),
        default=60.0,
        gt=0,
    )
    alert_baseline_hours: int = Field(
        description="The hours before the current one that make a topic's baseline for spike alerts.",
        default=168,
        ge=1,
        le=24 * 90,
    )
    alert_min_history_hours: int = Field(
        description=(
            "No spike alerts until the database holds this many hours of mentions (a new install has no "
            "normal yet)."
        ),
        default=24,
        ge=0,
    )
    alert_min_count: int = Field(
        description="A spike needs at least this many mentions in the hour.", default=5, ge=1
    )
    alert_ratio: float = Field(
        description=(
            "A spike: the hour's count reaches the baseline's mean times this (or the other two bounds)."
        ),
        default=3.0,
        ge=0,
    )
    alert_stddevs: float = Field(
        description=(
            "A spike: the hour's count reaches the mean plus this many standard deviations (or the other two "
            "bounds)."
        ),
        default=3.0,
        ge=0,
    )

    classifier_engine: ClassifierEngineKind = Field(
        default=ClassifierEngineKind.CASCADE,
        description=(
            "`cascade` (the model's fast heads, its fine-tuned encoder where they are unsure), `learned` "
            "(the encoder for every mention) or `rules` (lexicon and taxonomy only: no model, the fastest, "
            "but it knows only the taxonomy's words); docs/classifier.md says when to choose which."
        ),
    )
    classifier_model: Path = Field(
        default=REPO_ROOT / "models" / "minilm-v3.npz",
        description=(
            "The model artifact of the `cascade` and `learned` engines (heads, int8 encoder beside it, "
            "tokenizer, cascade policy)."
        ),
    )
    classifier_threads: int = Field(
        description=(
            "Texts the classifier's encoder runs at once, each on one core (ONNX Runtime, one thread per "
            "run); a core or two per process, scale out with processes."
        ),
        default=2,
        ge=1,
        le=64,
    )
    classifier_max_tokens: int | None = Field(
        description=(
            "Word pieces the encoder reads of a text (its head and tail); unset: what the model was trained "
            "with (128)."
        ),
        default=None,
        ge=8,
        le=512,
    )
    exactly_once: bool = Field(
        default=False,
        description=(
            "Exactly-once from `mentions.raw` to `mentions.classified`: the classifier publishes a batch and "
            "commits its offsets in one Kafka transaction, and the services' consumers read committed "
            "messages only."
        ),
    )

    ingest_default_poll_interval_s: float = Field(
        description="Poll interval of a source registered without one.", default=300.0, gt=0
    )
    ingest_sources_refresh_s: float = Field(
        description="How often ingest re-reads the source list.", default=5.0, gt=0
    )
    ingest_http_timeout_s: float = Field(description="Timeout of one feed request.", default=15.0, gt=0)
    ingest_max_feed_bytes: int = Field(
        description="The largest feed response read; a larger one fails that poll, in the source's health.",
        default=10 * 1024 * 1024,
        ge=1024,
    )
    ingest_concurrency: int = Field(description="Feeds fetched at once per ingest process.", default=8, ge=1)
    ingest_allow_file_urls: bool = Field(
        default=False,
        description=(
            "Allow `file://` sources: only sources an operator registered (`sources import`, never the API "
            "or a URL found in a feed), and only files under `ingest_file_root`. `mention-router run` turns "
            "it on for the bundled examples."
        ),
    )
    ingest_file_root: Path = Field(
        default=REPO_ROOT / "examples",
        description="The directory `file://` sources may read (symbolic links resolved).",
    )
    ingest_allowed_networks: str = Field(
        default="",
        description=(
            "Addresses or CIDR networks a source may resolve to although they are not globally reachable "
            "(loopback, private, shared 100.64/10, link-local, unique-local, and 6to4/Teredo/NAT64 addresses "
            "wrapping them), comma-separated, e.g. `10.20.0.0/16`; everything else of that kind is refused, "
            "at registration, at connect time and on every redirect."
        ),
    )
    ingest_per_host_concurrency: int = Field(description="Requests at once to one host.", default=2, ge=1)
    ingest_lease_s: float = Field(
        description="How long a replica holds a source while it polls it; another replica may take it after.",
        default=120.0,
        gt=0,
    )
    ingest_max_backoff_s: float = Field(
        description="The longest wait before polling a source again after repeated failures.",
        default=3600.0,
        gt=0,
    )
    ingest_discover_comment_feeds: bool = Field(
        default=True,
        description=(
            "Discover per-post comment feeds (`wfw:commentRss`, Atom replies links) and poll them as sources "
            "of their own."
        ),
    )
    ingest_max_comment_feeds_per_source: int = Field(
        description="The most comment feeds discovered per source.", default=25, ge=0
    )
    ingest_comment_feed_poll_interval_s: int = Field(
        description="Poll interval of discovered comment feeds (at least their parent's).", default=900, ge=1
    )
    ingest_near_duplicates: bool = Field(
        default=True,
        description="Link near-duplicate mentions (MinHash) to the first one instead of routing them again.",
    )
    ingest_near_duplicate_window_days: int = Field(
        description="How far back a near-duplicate is looked for.", default=30, ge=1
    )

    api_host: str = Field(
        default="127.0.0.1",
        description="Where the API listens.",
    )
    api_port: int = Field(
        default=8000,
        description="The API's port.",
    )
    api_page_size_max: int = Field(
        default=200,
        description="The largest `limit` of a listing.",
    )
    api_export_max_rows: int = Field(description="The most rows one export streams.", default=100_000, ge=1)
    api_auth: bool = Field(
        default=True,
        description="API keys required. `false`: every caller is an anonymous admin (development only).",
    )
    api_bootstrap_key: SecretStr | None = Field(
        default=None,
        description=(
            "A whole key (`mr_<8 hex>_<secret>`) registered as an admin key at start, for deployments that "
            "provision the first key from a secret store; `mention-router keys create` makes keys otherwise."
        ),
    )

    @field_validator("api_bootstrap_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    api_key_cache_s: float = Field(
        description=(
            "How long an API process trusts a key it found valid without asking the database again. The "
            "process that revokes a key refuses it at once; other API processes within this many seconds. 0: "
            "the database on every request."
        ),
        default=10.0,
        ge=0,
        le=300,
    )
    api_queue_stats_max_age_s: float = Field(
        description=(
            "`GET /v1/queues`: each API process counts the overdue assignments and finds the oldest open "
            "ones at most once in this many seconds (on a grid of this step, so replicas agree; the "
            "answer's `as_of`); the counts by status and priority are read for every request. 0: all "
            "for every request."
        ),
        default=2.0,
        ge=0,
        le=300,
    )
    api_rate_limit_per_s: float = Field(
        description=(
            "Requests per second per key (per anonymous client without keys), per API process: a token "
            "bucket (429 with Retry-After). 0: no limit."
        ),
        default=50.0,
        ge=0,
    )
    api_rate_limit_burst: int = Field(
        description="The token bucket's size: requests a key may send at once.", default=200, ge=1
    )
    embedded_key_file: Path = Field(
        default=REPO_ROOT / "var" / "admin-api-key",
        description="Where `mention-router run` keeps the admin key it makes on its first run (mode 0600).",
    )
    api_max_body_bytes: int = Field(
        description=(
            "Request bodies above this are refused with 413 before they are read (also chunked ones)."
        ),
        default=1_048_576,
        ge=1024,
    )
    api_cors_origins: list[str] = Field(
        description="Origins allowed by CORS (a JSON list); empty: CORS off.", default_factory=list
    )
    api_database_parallel_workers: int = Field(
        description=(
            "PostgreSQL's `max_parallel_workers_per_gather` for the API's sessions. 0: the API runs many "
            "small queries at once, and parallel workers only took CPU from the others (bench.api_bench: "
            "capacity 59 -> 72 requests/s on 2 cores); raise it on a machine with cores to spare for heavy "
            "statistics and exports."
        ),
        default=0,
        ge=0,
    )
    stream_max_clients: int = Field(
        description="Open `GET /v1/stream` connections per API process; more get 503 with Retry-After.",
        default=100,
        ge=1,
    )
    stream_keepalive_s: float = Field(
        description="Seconds between keep-alive comments on a quiet stream.", default=15.0, gt=0
    )
    stream_key_recheck_s: float = Field(
        description=(
            "How often an open stream re-checks its key (revoked, expired or no longer allowed the "
            "departments: the stream ends)."
        ),
        default=10.0,
        gt=0,
    )
    stats_max_buckets: int = Field(
        description="The most hours or days one `GET /v1/stats/mentions` spans (422 beyond).",
        default=1000,
        ge=1,
    )

    webhook_worker: bool = Field(
        default=True,
        description=(
            "The API process fans routed mentions out to the departments' webhook endpoints and sends them "
            "(off: another API replica does it, or nobody)."
        ),
    )
    webhook_allow_http: bool = Field(
        default=False,
        description="Accept plain http:// endpoints (development and tests); otherwise https is required.",
    )
    webhook_allowed_networks: str = Field(
        default="",
        description=(
            "Like `ingest_allowed_networks`, for webhook endpoints: addresses that are not globally "
            "reachable which an endpoint may resolve to; checked at registration and on every connection."
        ),
    )
    webhook_timeout_s: float = Field(description="Timeout of one webhook request.", default=10.0, gt=0)
    webhook_max_attempts: int = Field(description="Attempts before a delivery is `dead`.", default=8, ge=1)
    webhook_retry_schedule_s: list[float] = Field(
        description=(
            "Waits between a delivery's attempts, in seconds, each with ±20 % jitter (the last repeats): 10 "
            "s, 30 s, 2 min, 10 min, 1 h, 3 h, 6 h, about 10 hours in all."
        ),
        default_factory=lambda: [10.0, 30.0, 120.0, 600.0, 3600.0, 10800.0, 21600.0],
        min_length=1,
    )
    webhook_concurrency: int = Field(
        description="Webhook requests in flight per API process (at most 4 of them to one endpoint).",
        default=16,
        ge=1,
    )
    webhook_poll_interval_s: float = Field(
        description="How often the sender looks for due deliveries when nothing woke it.", default=1.0, gt=0
    )

    metrics_host: str = Field(
        default="127.0.0.1",
        description=(
            "Where every service serves /metrics (and the stages /healthz and /readyz); never on the API's "
            "public port."
        ),
    )
    metrics_port: int = Field(
        description="The metrics port (0: no metrics server).", default=9100, ge=0, le=65535
    )
    metrics_business_interval_s: float = Field(
        description=(
            "How often the API computes the departments' queue gauges in the background (not per scrape)."
        ),
        default=15.0,
        ge=1,
        le=3600,
    )

    log_level: str = Field(
        default="INFO",
        description="Logging level: DEBUG, INFO, WARNING, ERROR.",
    )
    log_json: bool = Field(
        default=False,
        description="Log JSON lines instead of text (every line, the API's access log included).",
    )

    def topic(self, name: str) -> str:
        """The full topic name for a logical name such as `mentions.raw`."""
        return f"{self.topic_prefix}{name}"

    @field_validator("kafka_sasl_password", mode="before")
    @classmethod
    def _empty_password_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value else value

    @field_validator("kafka_sasl_password_file", "kafka_ssl_cafile", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: object) -> object:
        # compose and Helm pass an unset variable as an empty one
        return None if isinstance(value, str) and not value.strip() else value

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
