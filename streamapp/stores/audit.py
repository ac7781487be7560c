"""The audit store: Elasticsearch 8 (Docker) or OpenSearch 2 (local stack).

We talk to it with ``opensearch-py``'s async client.  The official
``elasticsearch`` client (8 and 9) refuses any server that is not Elastic's
own (its product check and ``compatible-with`` media types), while
``opensearch-py`` sends plain JSON to the REST endpoints both servers share
and that we use: ``_index_template``, ``_bulk``, ``_search``, ``_count``,
``_cluster/health``.  The integration tests exercise this path against the
local OpenSearch.

Documents go to daily indices ``<prefix>-YYYY.MM.DD`` chosen by the event's
own time (its UTC day), with ``_id`` derived from ``event_id``: a replay overwrites the same
document instead of adding one.  Only masked data ever reaches this module.
"""
from __future__ import annotations

import logging
from datetime import date, datetime, timezone
from typing import Any, Dict, Iterable, List, Optional, Tuple

import orjson
from opensearchpy import AsyncOpenSearch
from opensearchpy.serializer import JSONSerializer

from . import audit_query
from .base import RetryPolicy, StoreBase
from .errors import Busy

log = logging.getLogger(__name__)


class FastJSON(JSONSerializer):
    """orjson for the bulk bodies (every event and outcome passes through here);
    anything orjson cannot encode falls back to the client's own rules."""

    def dumps(self, data: Any) -> str:
        if isinstance(data, (str, bytes)):
            return data  # type: ignore[return-value]  # the client sends bytes as they are
        return orjson.dumps(data, default=self.default).decode()

    def loads(self, s: str) -> Any:
        return orjson.loads(s)

_JSON = FastJSON()

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


#: Documents per ``_bulk`` request.
BULK_DOCS = 2000
#: The reply names each document's status, and the error of those refused
#: only: parsing every item's full result costs more than writing the request.
_BULK_PARAMS = {"filter_path": "errors,items.*.status,items.*.error"}


#: Date fields of a document, indexed in UTC.
_TIMES = ("occurred_at", "recorded_at")


class AuditBusy(Busy):
    """The audit store took the request but not every document: retry later."""


def failures(reply: Dict[str, Any]) -> Tuple[List[dict], List[dict]]:
    """A ``_bulk`` reply's failed items: (not taken for now, refused for good).

    429 and 5xx mean the store was busy or broken and will take the same
    document later; anything else (a 400 from the mapping) is about the
    document itself."""
    if not reply.get("errors"):
        return [], []
    busy: List[dict] = []
    refused: List[dict] = []
    for item in reply.get("items", ()):
        for result in item.values():
            if result.get("error"):
                status = result.get("status", 0)
                (busy if status == 429 or status >= 500 else refused).append(result)
    return busy, refused


class AuditStore(StoreBase):
    name = "audit"
    #: An error of unknown kind is a bug here, not an outage: raised, not retried.
    retry_policy = RetryPolicy(retry_unknown=False)

    def __init__(self, url: str, prefix: str, refresh_interval: str = "5s",
                 ca_file: str = "") -> None:
        # ``https://user:password@host:9200``: the client sends the URL's
        # credentials as basic auth; ``ca_file`` verifies the server's certificate.
        self._url = url
        self._tls: Dict[str, Any] = {"ca_certs": ca_file, "verify_certs": True} if ca_file else {}
        self.prefix = prefix
        self.refresh_interval = refresh_interval
        self._client: Optional[AsyncOpenSearch] = None
        self._template_ready = False
        self._index_names: Dict[date, str] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._url)

    @property
    def client(self) -> AsyncOpenSearch:
        if self._client is None:
            self._client = AsyncOpenSearch(hosts=[self._url], timeout=10, max_retries=0,
                                           serializer=FastJSON(), **self._tls)
        return self._client

    async def connect(self) -> None:
        await self.ensure_template()

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
                             "refresh_interval": self.refresh_interval},
                "mappings": MAPPINGS,
            },
        })
        self._template_ready = True

    def index_for(self, when: datetime) -> str:
        """The daily index of a time (formatting a date costs more than the lookup)."""
        day = when.date()
        name = self._index_names.get(day)
        if name is None:
            name = self._index_names[day] = f"{self.prefix}-{day:%Y.%m.%d}"
        return name

    async def index(self, docs: Iterable[Dict[str, Any]]) -> int:
        """Bulk-index documents; each must carry ``_id`` and ``occurred_at``.

        The ``_bulk`` body is written here with orjson, ``BULK_DOCS`` documents
        a request, and the reply is filtered to statuses and errors: the
        client's bulk helper cost several times as much CPU a document (see
        bench/README.md, "Audit bulk body").  A document the store refuses
        for its content is logged and skipped (retrying would not change it);
        one it could not take for now (429 or 5xx per item) raises
        ``AuditBusy``, and the caller retries the whole batch (same ids: no
        duplicates).
        """
        await self.ensure_template()
        docs = list(docs)
        indexed = 0
        for start in range(0, len(docs), BULK_DOCS):
            chunk = docs[start:start + BULK_DOCS]
            reply = await self.client.bulk(body=self._bulk_body(chunk), params=_BULK_PARAMS)
            busy, refused = failures(reply)
            if busy:
                raise AuditBusy(f"{len(busy)} of {len(chunk)} documents not taken now, "
                                f"first: {busy[0].get('error')}")
            if refused:
                log.warning("audit store refused %d documents, first: %s",
                            len(refused), refused[0])
            indexed += len(chunk) - len(refused)
        return indexed

    def _bulk_body(self, docs: List[Dict[str, Any]]) -> bytes:
        """The NDJSON body, appended to one buffer.

        Keeping each line as its own bytes object until a final join cost
        about five times as much (bench/README.md, "Audit bulk body"): thousands
        of fresh allocations a request, where appending reuses the same memory.
        """
        body = bytearray()
        default = _JSON.default
        for doc in docs:
            source = dict(doc)
            doc_id = source.pop("_id")
            for name in _TIMES:
                # UTC: the contract allows offsets to +-23:59, the store's date
                # parser (java.time) only to +-18:00, and refused the rest.
                when = source.get(name)
                if isinstance(when, datetime) and when.utcoffset():
                    source[name] = when.astimezone(timezone.utc)
            body += orjson.dumps(
                {"index": {"_index": self.index_for(source["occurred_at"]), "_id": doc_id}})
            body += b"\n"
            body += orjson.dumps(source, default=default)
            body += b"\n"
        return bytes(body)

    async def search(self, *, event_type: Optional[str] = None, user_id: Optional[str] = None,
                     doc_kind: Optional[str] = None, since: Optional[datetime] = None,
                     until: Optional[datetime] = None, size: int = 50) -> Dict[str, Any]:
        filters: List[Dict[str, Any]] = []
        for field, value in (("event_type", event_type), ("user_id", user_id),
                             ("doc_kind", doc_kind)):
            if value:
                filters.append({"term": {field: value}})
        if since or until:
            filters.append({"range": {"occurred_at": audit_query.time_range(since, until)}})
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
        return int(reply["count"])

    async def refresh(self) -> None:
        await self.client.indices.refresh(index=f"{self.prefix}-*",
                                          params={"ignore_unavailable": "true",
                                                  "allow_no_indices": "true"})
