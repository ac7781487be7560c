"""One module per store: connection, schema or indexes, batched idempotent
writes.  ``stores`` holds the process-wide clients, created lazily so a store
that is down at start-up is retried like any other outage."""
from __future__ import annotations

from typing import Tuple

from ..config import Settings, settings
from .audit import AuditStore
from .base import Store
from .mongo import MongoStore
from .postgres import PostgresStore
from .redis import RedisStore


class Stores:
    def __init__(self, cfg: Settings) -> None:
        # With a separate migration DSN the worker's role may lack DDL rights:
        # it then checks the schema version instead of migrating.
        self.postgres = PostgresStore(cfg.postgres_dsn, migrate=not cfg.postgres_migrate_dsn)
        self.mongo = MongoStore(cfg.mongodb_url, tls_ca_file=cfg.mongodb_tls_ca_file)
        self.redis = RedisStore(cfg.redis_url, session_ttl_s=cfg.session_ttl_s,
                                dedupe_ttl_s=cfg.dedupe_ttl_s,
                                cache_ttl_s=cfg.catalog_cache_ttl_s,
                                cluster=cfg.redis_cluster, prefix=cfg.redis_key_prefix,
                                shards=cfg.redis_shards)
        self.audit = AuditStore(cfg.elasticsearch_url, cfg.audit_index_prefix,
                                cfg.audit_refresh_interval, ca_file=cfg.elasticsearch_ca_file)

    def required(self) -> Tuple[Store, ...]:
        """The stores a worker cannot do without (the audit store is optional)."""
        return (self.postgres, self.mongo, self.redis)

    def all(self) -> Tuple[Store, ...]:
        return (*self.required(), self.audit)

    async def close(self) -> None:
        for store in self.all():
            await store.close()


stores = Stores(settings)
