"""The audit store: Elasticsearch 8 (Docker) or OpenSearch 2 (local stack).

We talk to it with ``opensearch-py``'s async client.  The official
``elasticsearch`` client (8 and 9) refuses any server that is not Elastic's
own (its product check and ``compatible-with`` media types), while
``opensearch-py`` sends plain JSON to the REST endpoints both servers share
and that we use: ``_index_template``, ``_bulk``, ``_search``, ``_count``,
``_cluster/health``.  The integration tests exercise this path against the
local OpenSearch.

Documents go to daily indices ``<prefix>-YYYY.MM.DD`` chosen by the event's
own time, with ``_id`` derived from ``event_id``: a replay overwrites the same
document instead of adding one.  Only masked data ever reaches this module.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Dict, Iterable, List, Optional

import orjson
from opensearchpy import AsyncOpenSearch
from opensearchpy.helpers import async_bulk
from opensearchpy.serializer import JSONSerializer

log = logging.getLogger(__name__)


class FastJSON(JSONSerializer):
    """orjson for the bulk bodies (every event and outcome passes through here);
    anything orjson cannot encode falls back to the client's own rules."""

    def dumps(self, data: Any) -> str:
        if isinstance(data, str):
            return data
        return orjson.dumps(data, default=self.default).decode()

    def loads(self, s: str) -> Any:
        return orjson.loads(s)

MAPPINGS: Dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "doc_kind": {"type": "keyword"},          # event | outcome | deadletter
        "event_id": {"type": "keyword"},
        "event_type": {"type": "keyword"},
        "stream": {"type": "keyword"},
        "user_id": {"type": "keyword"},
        "movie_id": {"type": "keyword"},
        "occurred_at": {"type": "date"},
        "recorded_at": {"type": "date"},
        "status": {"type": "keyword"},            # stored | rejected | retried
        "store": {"type": "keyword"},
        "reason": {"type": "keyword"},
        "detail": {"type": "text"},
        "email_hash": {"type": "keyword"},
        "payload": {"type": "object", "enabled": False},  # kept, not indexed
    },
}


class AuditStore:
    name = "audit"

    def __init__(self, url: str, prefix: str) -> None:
        self._url = url
        self.prefix = prefix
        self._client: Optional[AsyncOpenSearch] = None
        self._template_ready = False

    @property
    def enabled(self) -> bool:
        return bool(self._url)

    @property
    def client(self) -> AsyncOpenSearch:
        if self._client is None:
            self._client = AsyncOpenSearch(hosts=[self._url], timeout=10, max_retries=0,
                                           serializer=FastJSON())
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def ping(self) -> bool:
        health = await self.client.cluster.health()
        return health.get("status") in ("green", "yellow")

    async def ensure_template(self) -> None:
        if self._template_ready:
            return
        await self.client.indices.put_index_template(name=self.prefix, body={
            "index_patterns": [f"{self.prefix}-*"],
            "template": {
                "settings": {"number_of_shards": 1, "number_of_replicas": 0,
                             "refresh_interval": "1s"},
                "mappings": MAPPINGS,
            },
        })
        self._template_ready = True

    def index_for(self, when: datetime) -> str:
        return f"{self.prefix}-{when:%Y.%m.%d}"

    async def index(self, docs: Iterable[Dict[str, Any]]) -> int:
        """Bulk-index documents; each must carry ``_id`` and ``occurred_at``."""
        await self.ensure_template()
        actions = []
        for doc in docs:
            doc = dict(doc)
            doc_id = doc.pop("_id")
            actions.append({"_op_type": "index", "_index": self.index_for(doc["occurred_at"]),
                            "_id": doc_id, "_source": doc})
        if not actions:
            return 0
        ok, errors = await async_bulk(self.client, actions, chunk_size=1000, max_retries=0,
                                      raise_on_error=False, raise_on_exception=True)
        if errors:  # documents the store refused (not an outage): logged, not retried
            log.warning("audit store refused %d documents, first: %s", len(errors), errors[0])
        return ok

    async def search(self, *, event_type: Optional[str] = None, user_id: Optional[str] = None,
                     doc_kind: Optional[str] = None, since: Optional[datetime] = None,
                     until: Optional[datetime] = None, size: int = 50) -> Dict[str, Any]:
        filters: List[Dict[str, Any]] = []
        for field, value in (("event_type", event_type), ("user_id", user_id),
                             ("doc_kind", doc_kind)):
            if value:
                filters.append({"term": {field: value}})
        if since or until:
            span = {}
            if since:
                span["gte"] = since.isoformat()
            if until:
                span["lte"] = until.isoformat()
            filters.append({"range": {"occurred_at": span}})
        body = {"query": {"bool": {"filter": filters}}, "size": size,
                "sort": [{"occurred_at": "desc"}]}
        reply = await self.client.search(index=f"{self.prefix}-*", body=body,
                                         params={"ignore_unavailable": "true",
                                                 "allow_no_indices": "true"})
        hits = reply["hits"]
        return {"total": hits["total"]["value"],
                "hits": [dict(h["_source"], _id=h["_id"]) for h in hits["hits"]]}

    async def count(self, **term: str) -> int:
        query = {"bool": {"filter": [{"term": {k: v}} for k, v in term.items()]}}
        reply = await self.client.count(index=f"{self.prefix}-*", body={"query": query},
                                        params={"ignore_unavailable": "true",
                                                "allow_no_indices": "true"})
        return reply["count"]

    async def refresh(self) -> None:
        await self.client.indices.refresh(index=f"{self.prefix}-*",
                                          params={"ignore_unavailable": "true",
                                                  "allow_no_indices": "true"})
