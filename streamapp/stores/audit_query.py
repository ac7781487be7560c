"""Queries of the audit explorer (``/audit/``, ``streamapp.web.audit_views``).

Every query is built here as a structure (a dict the client serialises), from
values the web layer has already validated: no user text is ever spliced into
a query string.  Free text goes to ``simple_query_string``, which never
raises on bad syntax, with a bounded length, a fixed list of fields and the
expensive operators (fuzzy, slop, near) switched off.

The histogram is a ``date_histogram`` of ``occurred_at`` with a ``terms``
sub-aggregation on ``event_type``: documents per interval and type, empty
intervals included (``extended_bounds``), so a chart's x axis is the whole
range asked for.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Dict, List, Optional

from opensearchpy import AsyncOpenSearch

#: Longest free text accepted (characters).
MAX_TEXT = 200
#: Fields free text is matched against: ``detail`` is analysed text, the rest
#: keywords (matched whole, or by prefix with ``*``).  ``payload`` is stored
#: but not indexed (``stores.audit.MAPPINGS``), so it cannot be searched.
TEXT_FIELDS = ("detail", "event_id", "event_type", "user_id", "movie_id", "reason",
               "status", "store", "stream", "email_hash")
#: ``simple_query_string`` operators allowed: no FUZZY, NEAR or SLOP (costly).
TEXT_FLAGS = "AND|OR|NOT|PHRASE|PREFIX|PRECEDENCE|WHITESPACE|ESCAPE"
#: Histogram intervals, smallest first, and their length in seconds.
INTERVALS = {"1m": 60, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "3h": 10800,
             "12h": 43200, "1d": 86400}
#: Most buckets one histogram may have.
MAX_BUCKETS = 360
#: Event types shown per bucket (the contract has 17; ``(none)`` is a dead
#: letter whose type could not be read).
MAX_TYPES = 40
NO_TYPE = "(none)"
#: OpenSearch's default ``index.max_result_window``: from + size must stay within.
MAX_WINDOW = 10_000
#: Documents about one event shown with it (the event, its outcomes, dead letters).
MAX_RELATED = 50

_INDEX_PARAMS = {"ignore_unavailable": "true", "allow_no_indices": "true"}


@dataclass(frozen=True)
class Filters:
    """A validated explorer query."""

    since: datetime
    until: datetime
    text: Optional[str] = None
    event_type: Optional[str] = None
    user_id: Optional[str] = None
    movie_id: Optional[str] = None
    doc_kind: Optional[str] = None
    status: Optional[str] = None


def bucket_count(since: datetime, until: datetime, interval: str) -> int:
    """Buckets of ``interval`` (aligned to the epoch, as OpenSearch aligns them)
    that ``since``..``until`` touches."""
    seconds = INTERVALS[interval]
    return int(until.timestamp() // seconds - since.timestamp() // seconds) + 1


def auto_interval(since: datetime, until: datetime) -> str:
    """The smallest interval that gives at most ``MAX_BUCKETS`` buckets."""
    for name in INTERVALS:
        if bucket_count(since, until, name) <= MAX_BUCKETS:
            return name
    return "1d"


def time_range(since: Optional[datetime], until: Optional[datetime]) -> Dict[str, Any]:
    """A range of ``occurred_at`` in epoch milliseconds, as the index keeps it.

    Not ISO strings: OpenSearch fills the components a date leaves out
    upwards for ``lte``, so ``until=11:49:00`` counted documents up to
    11:49:00.999.
    """
    span: Dict[str, Any] = {"format": "epoch_millis"}
    if since is not None:
        span["gte"] = int(since.timestamp() * 1000)
    if until is not None:
        span["lte"] = int(until.timestamp() * 1000)
    return span


def query(f: Filters) -> Dict[str, Any]:
    """The ``bool`` query of a search: filters only, plus the free text."""
    clauses: List[Dict[str, Any]] = [{"range": {"occurred_at": time_range(f.since, f.until)}}]
    for field, value in (("event_type", f.event_type), ("user_id", f.user_id),
                         ("movie_id", f.movie_id), ("doc_kind", f.doc_kind),
                         ("status", f.status)):
        if value:
            clauses.append({"term": {field: value}})
    body: Dict[str, Any] = {"filter": clauses}
    if f.text:
        body["must"] = [{"simple_query_string": {
            "query": f.text[:MAX_TEXT], "fields": list(TEXT_FIELDS),
            "default_operator": "and", "flags": TEXT_FLAGS, "lenient": True,
            "analyze_wildcard": False}}]
    return {"bool": body}


def search_body(f: Filters, offset: int, size: int, interval: str) -> Dict[str, Any]:
    """One request: a page of hits, newest first, and the histogram."""
    return {
        "query": query(f),
        "from": offset, "size": size,
        "sort": [{"occurred_at": {"order": "desc"}}, {"recorded_at": {"order": "desc"}},
                 {"event_id": {"order": "asc", "missing": "_last"}}],
        "track_total_hits": True,
        "aggs": {"histogram": {
            "date_histogram": {
                "field": "occurred_at", "fixed_interval": interval, "min_doc_count": 0,
                "extended_bounds": {"min": int(f.since.timestamp() * 1000),
                                    "max": int(f.until.timestamp() * 1000)}},
            "aggs": {"types": {"terms": {"field": "event_type", "size": MAX_TYPES,
                                         "missing": NO_TYPE}}}}},
    }


def histogram(reply: Dict[str, Any]) -> Dict[str, Any]:
    """Buckets as ``{"start": epoch ms, "total": n, "types": {type: n}}``."""
    buckets = []
    seen: set[str] = set()
    for b in reply.get("aggregations", {}).get("histogram", {}).get("buckets", []):
        types = {t["key"]: t["doc_count"] for t in b["types"]["buckets"]}
        seen.update(types)
        buckets.append({"start": int(b["key"]), "total": b["doc_count"], "types": types})
    return {"buckets": buckets, "types": sorted(seen)}


async def search(client: AsyncOpenSearch, prefix: str, f: Filters, *, offset: int,
                 size: int, interval: str) -> Dict[str, Any]:
    reply = await client.search(index=f"{prefix}-*", body=search_body(f, offset, size, interval),
                                params=_INDEX_PARAMS)
    hits = reply["hits"]
    return {"total": hits["total"]["value"], "total_relation": hits["total"]["relation"],
            "hits": [dict(h["_source"], _id=h["_id"]) for h in hits["hits"]],
            "histogram": histogram(reply)}


async def document(client: AsyncOpenSearch, prefix: str, doc_id: str) -> Optional[Dict[str, Any]]:
    """One document by its ``_id`` (whatever its daily index), or None."""
    reply = await client.search(index=f"{prefix}-*", body={
        "query": {"ids": {"values": [doc_id]}}, "size": 1}, params=_INDEX_PARAMS)
    hits = reply["hits"]["hits"]
    return dict(hits[0]["_source"], _id=hits[0]["_id"]) if hits else None


async def about_event(client: AsyncOpenSearch, prefix: str, event_id: str) -> List[Dict[str, Any]]:
    """Every document about one event (the event, its outcomes, dead letters),
    in the order they were recorded."""
    reply = await client.search(index=f"{prefix}-*", body={
        "query": {"bool": {"filter": [{"term": {"event_id": event_id}}]}},
        "size": MAX_RELATED, "sort": [{"recorded_at": {"order": "asc"}}]},
        params=_INDEX_PARAMS)
    return [dict(h["_source"], _id=h["_id"]) for h in reply["hits"]["hits"]]
