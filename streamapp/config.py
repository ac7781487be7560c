"""All settings, read from the environment in one place.

Nothing else in the code base reads ``os.environ``.  Each setting has a
default that works with the local stack (``scripts/stack.py``) and a comment
that says what it controls and why the default is what it is.
"""
from __future__ import annotations

import os
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Tuple

#: Where settings are read from: the process environment, or the mapping
#: given to ``Settings.from_env`` while it builds a Settings object.
_SOURCE: ContextVar[Mapping[str, str]] = ContextVar("settings_source", default=os.environ)


def _env(name: str, default: str) -> str:
    return _SOURCE.get().get(name, default)


def _env_int(name: str, default: int) -> int:
    return int(_SOURCE.get().get(name, default))


def _env_float(name: str, default: float) -> float:
    return float(_SOURCE.get().get(name, default))


def _env_bool(name: str, default: bool) -> bool:
    raw = _SOURCE.get().get(name)
    return default if raw is None else raw.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True, repr=False)
class Settings:
    # --- connections -----------------------------------------------------
    #: Kafka bootstrap servers, ``host:port[,host:port]``.
    kafka_bootstrap: str = field(default_factory=lambda: _env("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    #: PostgreSQL DSN.  The local stack trusts loopback connections, so the
    #: default carries no password; in other deployments put it in the DSN
    #: through the environment (never in code).
    postgres_dsn: str = field(default_factory=lambda: _env(
        "POSTGRES_DSN", "postgresql://streamapp@127.0.0.1:5432/streamapp"))
    #: MongoDB URL; the path names the database.
    mongodb_url: str = field(default_factory=lambda: _env("MONGODB_URL", "mongodb://127.0.0.1:27017/streamapp"))
    redis_url: str = field(default_factory=lambda: _env("REDIS_URL", "redis://127.0.0.1:6379/0"))
    #: Talk to a Redis Cluster (``REDIS_URL`` names any one node; the client
    #: discovers the rest).  Keys are laid out for a cluster either way (see
    #: ``streamapp.stores.redis``), so switching needs no migration of code.
    redis_cluster: bool = field(default_factory=lambda: _env_bool("REDIS_CLUSTER", False))
    #: Prefix of every Redis key, so several deployments (or test runs) can
    #: share one Redis; a Redis Cluster has only database 0.
    redis_key_prefix: str = field(default_factory=lambda: _env("REDIS_KEY_PREFIX", "sa:"))
    #: Counter shards: dedupe claims, event counts and sessions are spread
    #: over this many hash slots.  It caps how many cluster masters share that
    #: load; each batch costs one script call per shard it touches.  Changing
    #: it re-homes counters, so choose it once per deployment.
    redis_shards: int = field(default_factory=lambda: _env_int("REDIS_SHARDS", 16))
    #: Elasticsearch 8 or OpenSearch 2 URL (the audit store).  Empty disables
    #: audit indexing; audit events then simply wait on Kafka.
    elasticsearch_url: str = field(default_factory=lambda: _env("ELASTICSEARCH_URL", "http://127.0.0.1:9200"))

    # --- connection security (README "Security", "Connections") ----------
    # Every URL and DSN above may carry credentials (``user:password@``):
    # PostgreSQL, MongoDB (``?authSource=admin``), Redis (an ACL user) and
    # Elasticsearch (``https://user:password@host:9200``).  We never log them:
    # ``streamapp.connections.redact`` masks any URL we print.
    #: How we talk to Kafka: PLAINTEXT (the local stack's default listener),
    #: SSL, SASL_PLAINTEXT or SASL_SSL (what a shared cluster should require:
    #: authenticated and encrypted).
    kafka_security_protocol: str = field(default_factory=lambda: _env(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").strip().upper())
    #: SASL mechanism when the protocol is SASL_*: SCRAM-SHA-512 (salted,
    #: challenge-response: the password never crosses the wire), SCRAM-SHA-256
    #: or PLAIN (only ever over SSL).
    kafka_sasl_mechanism: str = field(default_factory=lambda: _env(
        "KAFKA_SASL_MECHANISM", "SCRAM-SHA-512").strip().upper())
    kafka_sasl_username: str = field(default_factory=lambda: _env("KAFKA_SASL_USERNAME", ""))
    kafka_sasl_password: str = field(default_factory=lambda: _env("KAFKA_SASL_PASSWORD", ""), repr=False)
    #: CA bundle (PEM) that signed the brokers' certificates, for SSL and
    #: SASL_SSL; empty trusts the system's CAs.
    kafka_ssl_cafile: str = field(default_factory=lambda: _env("KAFKA_SSL_CAFILE", ""))
    #: A client certificate and key (PEM), only for brokers that require
    #: mutual TLS (``ssl.client.auth=required``).
    kafka_ssl_certfile: str = field(default_factory=lambda: _env("KAFKA_SSL_CERTFILE", ""))
    kafka_ssl_keyfile: str = field(default_factory=lambda: _env("KAFKA_SSL_KEYFILE", ""))
    #: The owner's DSN, for ``python -m streamapp.migrate`` only.  When set,
    #: the worker's ``POSTGRES_DSN`` may be a role without DDL rights: the
    #: worker then never migrates, it waits for the schema version it needs.
    #: Empty keeps the simple setup: the worker's own role owns the tables
    #: and migrates at start.
    postgres_migrate_dsn: str = field(default_factory=lambda: _env("POSTGRES_MIGRATE_DSN", ""))
    #: CA bundle (PEM) for MongoDB over TLS (``tls=true`` in MONGODB_URL);
    #: empty trusts the system's CAs.
    mongodb_tls_ca_file: str = field(default_factory=lambda: _env("MONGODB_TLS_CA_FILE", ""))
    #: CA bundle (PEM) for an https ELASTICSEARCH_URL; empty trusts the
    #: system's CAs.
    elasticsearch_ca_file: str = field(default_factory=lambda: _env("ELASTICSEARCH_CA_FILE", ""))

    # --- the Faust app ---------------------------------------------------
    app_id: str = field(default_factory=lambda: _env("STREAMAPP_ID", "streamapp"))
    #: Prefix of every topic we own, so several deployments can share a cluster.
    topic_prefix: str = field(default_factory=lambda: _env("TOPIC_PREFIX", "streamapp"))
    #: Prefix of the topics S2 writes to (outcomes, dead letters); empty means
    #: ``TOPIC_PREFIX``.  A second deployment reading the same event topics (a
    #: replay, a canary, the benchmark's baseline pass) sets its own, so that
    #: its outcomes and dead letters, and its audit trail, stay apart.
    output_topic_prefix: str = field(default_factory=lambda: _env("OUTPUT_TOPIC_PREFIX", ""))
    #: Partitions per event topic.  This caps the number of workers that can
    #: share the work (one partition is consumed by one worker), so it is set
    #: above today's worker count: 8 lets us grow to 8 workers without
    #: re-keying.  Tables' changelog topics get the same count (Faust requires
    #: co-partitioning of a table with the stream that updates it).
    topic_partitions: int = field(default_factory=lambda: _env_int("TOPIC_PARTITIONS", 8))
    #: Replication factor of our topics; 1 on a single local broker, 3 on a
    #: real cluster.
    topic_replicas: int = field(default_factory=lambda: _env_int("TOPIC_REPLICAS", 1))
    #: Bytes each partition of an event topic keeps before Kafka deletes its
    #: oldest records.  Event topics are kept by size, never by time
    #: (``streamapp.topics.event_topic_config``).
    topic_retention_bytes: int = field(default_factory=lambda: _env_int(
        "TOPIC_RETENTION_BYTES", 1 << 30))
    #: How often the consumer refreshes cluster metadata even when nothing
    #: asks it to.  A group leader that assigns partitions from metadata
    #: missing a topic (a broker's answer during a rebalance on the
    #: three-broker cluster did, and a worker that has just created its
    #: topics does) leaves that topic unassigned until its metadata changes
    #: again; Faust's default of 5 minutes made that a 5-minute stall, this
    #: bounds it to about 10 s, for one small request every 10 s.
    consumer_metadata_max_age_ms: int = field(default_factory=lambda: _env_int(
        "CONSUMER_METADATA_MAX_AGE_MS", 10_000))
    #: RocksDB memory per table partition: the write buffer (memtable) size and
    #: the block cache.  A memtable grows with every write until it is full,
    #: and there is one per partition of every table (8 by default): with RocksDB's
    #: default the worker's memory grew for hours (see bench/README.md,
    #: "RocksDB memory").  Our tables hold a few thousand small values,
    #: so a small buffer fills within minutes and flushes cheaply.  The block
    #: cache is off (0): compactions keep rewriting the few files, and a cache
    #: holds the old files' blocks until it is full, so any size only set the
    #: level at which the worker's memory stopped growing (hours later at
    #: 4 MB per partition); reads then come from the memtables and the OS's
    #: page cache, about 2 µs more each.
    rocksdb_write_buffer_kb: int = field(default_factory=lambda: _env_int("ROCKSDB_WRITE_BUFFER_KB", 256))
    rocksdb_block_cache_mb: int = field(default_factory=lambda: _env_int("ROCKSDB_BLOCK_CACHE_MB", 0))
    #: Table store.  RocksDB (via ``rocksdict``) keeps table state on disk so a
    #: restarted worker recovers from its local files plus the changelog tail
    #: instead of replaying the whole changelog; unit tests use ``memory://``.
    table_store: str = field(default_factory=lambda: _env("TABLE_STORE", "rocksdb://"))
    #: Where the worker keeps its table files.
    data_dir: str = field(default_factory=lambda: _env("STREAMAPP_DATA_DIR", ".stack/data/worker"))
    #: Standby replicas of each table partition on other workers, for fast
    #: fail-over when several workers run.
    table_standby_replicas: int = field(default_factory=lambda: _env_int("TABLE_STANDBY_REPLICAS", 1))
    #: ``at_least_once`` (default) or ``exactly_once``.  Stores are idempotent
    #: either way, and the rating tables skip what they already counted (each
    #: value carries the offset it counted up to; see ``tables/ratings.py``),
    #: while at-least-once flushes changelog writes before it commits
    #: offsets: counts stay exact across crashes.
    #: faust-streaming 0.15.3's exactly-once mode crashed the worker during a
    #: rebalance in our kill -9 test ("Can't send messages while not in
    #: transaction"), so it is not the default.
    processing_guarantee: str = field(default_factory=lambda: _env("PROCESSING_GUARANTEE", "at_least_once"))
    #: Bearer tokens accepted by the read views that return personal data
    #: (``/api/users/...``, ``/api/audit/``), comma-separated so a token can
    #: be rotated by adding the new one before removing the old.  Empty: those
    #: views answer 403 (closed, never open).  ``repr=False`` keeps them out
    #: of any printed or logged settings.
    api_tokens: Tuple[str, ...] = field(repr=False, default_factory=lambda: tuple(
        t.strip() for t in _env("API_TOKENS", "").split(",") if t.strip()))
    web_host: str = field(default_factory=lambda: _env("WEB_HOST", "127.0.0.1"))
    web_port: int = field(default_factory=lambda: _env_int("WEB_PORT", 6066))
    #: Faust's Prometheus sensor on ``/metrics`` (per-topic, per-table and
    #: commit metrics).  Off by default: it updates several metrics for every
    #: message and table operation, which made the pipeline and its sustained
    #: rate markedly slower (see bench/README.md, "Prometheus sensor").
    #: ``/metrics`` always serves our counters (per batch), and Faust's own
    #: stats stay on ``/`` and ``/assignment/``.
    prometheus_sensor: bool = field(default_factory=lambda: _env_bool("PROMETHEUS_SENSOR", False))

    # --- batching and retries --------------------------------------------
    #: Sinks write at most this many events per round trip ...
    batch_size: int = field(default_factory=lambda: _env_int("BATCH_SIZE", 500))
    #: ... or whatever arrived within this many seconds.  Under a backlog
    #: batches fill long before; on a live stream an event waits for the rest
    #: of the window, so the window is most of the latency (bench/README.md,
    #: "Batch window").  ``BATCH_SIZE=1`` gives the per-event baseline.
    batch_within_s: float = field(default_factory=lambda: _env_float("BATCH_WITHIN_S", 0.1))
    #: Faust pauses every agent while its producer holds more than this many
    #: unsent messages (changelog, outcomes, dead letters).  Faust's default,
    #: 100, is less than one batch's changelog, so agents stalled after every
    #: batch; memory stays small either way (messages are a few hundred bytes).
    producer_buffer_max_messages: int = field(default_factory=lambda: _env_int(
        "PRODUCER_BUFFER_MAX_MESSAGES", 10000))
    #: Backoff between retries of a failed store write: starts here ...
    retry_initial_s: float = field(default_factory=lambda: _env_float("RETRY_INITIAL_S", 0.2))
    #: ... doubles up to this cap, and never gives up (an event is not dropped
    #: because a store is down; the agent pauses and Kafka holds the rest).
    retry_max_s: float = field(default_factory=lambda: _env_float("RETRY_MAX_S", 5.0))

    # --- windows and rankings --------------------------------------------
    #: Tumbling window of rating counts ("most rated this minute").
    tumbling_window_s: int = field(default_factory=lambda: _env_int("TUMBLING_WINDOW_S", 60))
    #: Hopping window ("most rated in the last hour", moving every 5 min).
    hopping_window_s: int = field(default_factory=lambda: _env_int("HOPPING_WINDOW_S", 3600))
    hopping_step_s: int = field(default_factory=lambda: _env_int("HOPPING_STEP_S", 300))
    #: How long Redis keeps a window's leaderboard after it was last written.
    #: (The tables keep a closed window for one more window plus the grace,
    #: enough for late ratings and for "the previous window".)
    window_expires_s: int = field(default_factory=lambda: _env_int("WINDOW_EXPIRES_S", 7200))
    #: A rating whose time is older than its window's end plus this grace is
    #: late: it counts in the all-time table only.
    late_grace_s: int = field(default_factory=lambda: _env_int("LATE_GRACE_S", 10))
    #: Minimum votes for the "best rated" leaderboard, so one 10/10 vote does
    #: not top the chart.
    min_votes: int = field(default_factory=lambda: _env_int("MIN_VOTES", 5))
    #: How often changed titles' rating aggregates are copied to MongoDB.  The
    #: aggregate is a display copy of PostgreSQL's exact totals (live counts
    #: are in Redis and the tables); a document update costs milliseconds on
    #: FerretDB, and under load nearly every title changes between flushes,
    #: so each flush costs about the same: the interval sets MongoDB's load.
    title_aggregate_interval_s: float = field(default_factory=lambda: _env_float(
        "TITLE_AGGREGATE_INTERVAL_S", 10.0))
    #: How often table counts are mirrored into Redis leaderboards.
    mirror_interval_s: float = field(default_factory=lambda: _env_float("MIRROR_INTERVAL_S", 1.0))
    #: Viewing sessions expire from Redis this long after the last heartbeat.
    session_ttl_s: int = field(default_factory=lambda: _env_int("SESSION_TTL_S", 1800))
    #: Catalog read-through cache lifetime in Redis.
    catalog_cache_ttl_s: int = field(default_factory=lambda: _env_int("CATALOG_CACHE_TTL_S", 300))
    #: Dedup markers for non-idempotent Redis updates live this long; longer
    #: than any replay window we expect (Kafka retention of a day).
    dedupe_ttl_s: int = field(default_factory=lambda: _env_int("DEDUPE_TTL_S", 86400))

    # --- dashboard charts --------------------------------------------------
    #: One worker of the deployment samples its numbers (events consumed and
    #: lag per stream, store ping times) this often into a Redis list that
    #: every worker serves to the dashboard's charts (``streamapp.series``).
    series_sample_s: float = field(default_factory=lambda: _env_float("SERIES_SAMPLE_S", 5.0))
    #: How much history that list keeps (the charts show up to 30 minutes).
    series_keep_s: int = field(default_factory=lambda: _env_int("SERIES_KEEP_S", 1800))

    # --- audit ------------------------------------------------------------
    #: Run the audit consumer (S3) inside the worker.  Off by default: S3 runs
    #: as its own process (``python -m streamapp.audit``, which ``make run`` and
    #: docker-compose start), so indexing every event and outcome never
    #: competes with S2's agents for the worker's event loop (see
    #: bench/README.md, "Audit in the worker").
    audit_in_worker: bool = field(default_factory=lambda: _env_bool("AUDIT_IN_WORKER", False))
    #: Index name prefix; documents go to ``<prefix>-YYYY.MM.DD``.
    audit_index_prefix: str = field(default_factory=lambda: _env("AUDIT_INDEX_PREFIX", "streamapp-audit"))
    #: How soon an indexed document becomes searchable.  Each refresh writes a
    #: new segment that must later be merged, so a longer interval costs
    #: OpenSearch less CPU (see bench/README.md, "Audit refresh interval").
    #: Audit searches can wait 5 s; tests refresh explicitly.
    audit_refresh_interval: str = field(default_factory=lambda: _env("AUDIT_REFRESH_INTERVAL", "5s"))
    #: S3's fetches: the broker holds each one until this much data is there
    #: or the wait is over.  Without it a live stream reaches S3 a trickle at a
    #: time, and every trickle costs a bulk request (and a translog sync in the
    #: store) and an offset commit.  Audit documents are searchable after the
    #: refresh interval anyway.
    audit_fetch_min_bytes: int = field(default_factory=lambda: _env_int(
        "AUDIT_FETCH_MIN_BYTES", 256 * 1024))
    audit_fetch_max_wait_ms: int = field(default_factory=lambda: _env_int("AUDIT_FETCH_MAX_WAIT_MS", 250))
    #: Key used to hash PII (e-mails) in audit documents.  Set it in the
    #: environment in production; without it a per-deployment constant from
    #: the app id is used, which still never stores the raw value.
    audit_hash_key: str = field(default_factory=lambda: _env("AUDIT_HASH_KEY", ""))

    def topic(self, name: str) -> str:
        """Full topic name for one of our streams."""
        return f"{self.topic_prefix}.{name}"

    def output_topic(self, name: str) -> str:
        """Full name of a topic S2 writes: ``outcomes`` or ``deadletter``."""
        return f"{self.output_topic_prefix or self.topic_prefix}.{name}"

    def rocksdb_table_options(self) -> dict:
        """Faust's RocksDB ``options`` for one table partition (the sizes above)."""
        return {"write_buffer_size": self.rocksdb_write_buffer_kb * 2**10,
                "max_write_buffer_number": 2,
                "block_cache_size": self.rocksdb_block_cache_mb * 2**20}

    def __repr__(self) -> str:
        """Settings without secrets: URL passwords masked, the SASL password left out."""
        from .connections import redact

        shown = ", ".join(f"{f.name}={redact(getattr(self, f.name))!r}" if isinstance(
            getattr(self, f.name), str) else f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self) if f.repr)
        return f"Settings({shown})"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings as a process whose environment is ``env`` would build them
        (tests build the settings of the workers they start this way)."""
        token = _SOURCE.set(env)
        try:
            return cls()
        finally:
            _SOURCE.reset(token)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some settings replaced (tests build apps this way)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


settings = Settings()
