"""The audit explorer: ``/audit/`` and the JSON views behind it.

A local stand-in for Kibana's Discover over the audit index.  Routes (all
``GET``):

``/audit/``
    The explorer page (``static/audit.html``).  It holds no data and no
    token: the user pastes an API token, which the page keeps in the tab's
    ``sessionStorage`` and sends as ``Authorization: Bearer`` to the views
    below, like any other API client.
``/api/audit/search/?q=&event_type=&user_id=&movie_id=&kind=&status=&since=&until=&interval=&page=&size=``
    A page of documents, newest first, their total, and a histogram of
    documents per interval (default: as fine as one minute, at most
    ``MAX_BUCKETS`` buckets) by event type over ``since``..``until``
    (default: the last 15 minutes).
``/api/audit/doc/{id}/``
    One document, and every document about the same event: the event
    itself, its processing outcomes (stored, retried, rejected, per store)
    and any dead letter.

Both JSON views follow the read API's rules (``views.ApiView``): a bearer
token (personal data), every parameter validated (400), stores queried with
query structures only (``stores.audit_query``).  Documents are masked when
indexed (``streamapp.audit``) and masked again on the way out, so a
document written by an older version cannot leak what today's masking hides.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from functools import cache
from importlib import resources
from typing import Any, Dict, List, Mapping, Optional

import orjson
from faust.web import Request, Response, View

from ..app import app
from ..masking import mask, scrub_detail
from ..stores import audit_query, stores
from ..topics import STREAM_OF_TYPE
from .views import AUDIT_KINDS, ApiView, BadRequest, NotFound, choice, from_store, int_in, iso_time, optional_id

#: Outcome statuses (``streamapp.pipeline``).
STATUSES = frozenset({"stored", "retried", "rejected"})
#: The range shown when none is asked for, and the longest one accepted.
DEFAULT_RANGE = timedelta(minutes=15)
MAX_RANGE = timedelta(days=31)
#: Documents per page: default and most.
PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
#: Document ids: event ids (UUIDs), ``<event id>:<store>:<status>`` for
#: outcomes, ``dl:<topic>:<partition>:<offset>`` for dead letters.
DOC_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")
#: Free text may not hold control characters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AuditApiView(ApiView):
    """A personal view of the audit store; 503 when the store is disabled."""

    personal = True

    async def handle(self, request: Request, **kwargs: Any) -> Response:
        if not stores.audit.enabled:
            return self.error(503, "audit store disabled", store="audit")
        return await self.explore(request, **kwargs)

    async def explore(self, request: Request, **kwargs: Any) -> Response:
        raise NotImplementedError


def text(query: Mapping[str, str]) -> Optional[str]:
    raw = query.get("q")
    if raw is None or not raw.strip():
        return None
    if len(raw) > audit_query.MAX_TEXT:
        raise BadRequest(f"invalid q: at most {audit_query.MAX_TEXT} characters")
    if _CONTROL.search(raw):
        raise BadRequest("invalid q: control characters")
    return raw.strip()


def time_range(query: Mapping[str, str], now: datetime) -> tuple:
    since, until = iso_time(query, "since"), iso_time(query, "until")
    if until is None:
        until = now if since is None or since < now else since + DEFAULT_RANGE
    if since is None:
        since = until - DEFAULT_RANGE
    if since >= until:
        raise BadRequest("since must be before until")
    if until - since > MAX_RANGE:
        raise BadRequest(f"range too long: at most {MAX_RANGE.days} days")
    return since, until


def masked(doc: Dict[str, Any]) -> Dict[str, Any]:
    """A document as served: its masked parts masked again (masking is
    idempotent), the rest (ids, digests) as indexed."""
    out = dict(doc)
    payload = out.get("payload")
    if out.get("doc_kind") == "deadletter":
        if isinstance(payload, dict) and "fields" in payload:
            out["payload"] = dict(payload, fields=mask(payload["fields"]))
    elif payload is not None:
        out["payload"] = mask(payload)
    if out.get("detail") is not None:
        out["detail"] = scrub_detail(out["detail"])
    return out


@app.page("/api/audit/search/", name="api-audit-search")
class AuditSearchView(AuditApiView):
    params = frozenset({"q", "event_type", "user_id", "movie_id", "kind", "status", "since",
                        "until", "interval", "page", "size"})

    async def explore(self, request: Request) -> Response:
        query = request.query
        since, until = time_range(query, datetime.now(timezone.utc))
        filters = audit_query.Filters(
            since=since, until=until, text=text(query),
            event_type=choice(query, "event_type", STREAM_OF_TYPE),
            user_id=optional_id(query, "user_id"), movie_id=optional_id(query, "movie_id"),
            doc_kind=choice(query, "kind", AUDIT_KINDS), status=choice(query, "status", STATUSES))
        interval = choice(query, "interval", audit_query.INTERVALS) or \
            audit_query.auto_interval(since, until)
        if audit_query.bucket_count(since, until, interval) > audit_query.MAX_BUCKETS:
            raise BadRequest(f"interval too small for the range: at most "
                             f"{audit_query.MAX_BUCKETS} buckets")
        size = int_in(query, "size", 1, MAX_PAGE_SIZE, default=PAGE_SIZE)
        page = int_in(query, "page", 1, audit_query.MAX_WINDOW, default=1)
        if page * size > audit_query.MAX_WINDOW:
            raise BadRequest(f"page too deep: page x size at most {audit_query.MAX_WINDOW}; "
                             f"narrow the filters instead")
        found = await from_store("audit", audit_query.search(
            stores.audit.client, stores.audit.prefix, filters, offset=(page - 1) * size,
            size=size, interval=interval))
        total = found["total"]
        return self.json({
            "total": total, "total_relation": found["total_relation"],
            "page": page, "size": size,
            "pages": max(1, min(-(-total // size), audit_query.MAX_WINDOW // size)),
            "since": since.isoformat(), "until": until.isoformat(),
            "hits": [masked(h) for h in found["hits"]],
            "histogram": {"interval": interval,
                          "interval_s": audit_query.INTERVALS[interval],
                          **found["histogram"]},
        })


@app.page("/api/audit/doc/{doc_id:[^/]+}/", name="api-audit-doc")
class AuditDocView(AuditApiView):
    params = frozenset()

    async def explore(self, request: Request, doc_id: str) -> Response:
        if not DOC_ID.fullmatch(doc_id):
            raise BadRequest("invalid document id: 1-200 characters of letters, digits and "
                             "_.:- starting with a letter or digit")
        doc = await from_store("audit", audit_query.document(
            stores.audit.client, stores.audit.prefix, doc_id))
        if doc is None:
            raise NotFound(f"no audit document {doc_id}")
        related: List[Dict[str, Any]] = []
        if doc.get("event_id"):
            related = await from_store("audit", audit_query.about_event(
                stores.audit.client, stores.audit.prefix, doc["event_id"]))
        by_kind: Dict[str, List[Dict[str, Any]]] = {k: [] for k in AUDIT_KINDS}
        for other in related:
            by_kind.setdefault(other.get("doc_kind") or "event", []).append(masked(other))
        events = by_kind["event"]
        return self.json({"doc": masked(doc), "event": events[0] if events else None,
                          "outcomes": by_kind["outcome"], "deadletters": by_kind["deadletter"]})


@cache
def page() -> str:
    """The page, with the contract's event types for its filter."""
    html = (resources.files(__package__) / "static" / "audit.html").read_text("utf-8")
    return html.replace("/*EVENT_TYPES*/[]", orjson.dumps(sorted(STREAM_OF_TYPE)).decode())


@app.page("/audit/", name="audit-explorer")
class AuditPage(View):
    """The explorer page: public, it holds no data (the JSON views need the token)."""

    async def get(self, request: Request) -> Response:
        return self.html(page(), headers={"Cache-Control": "no-cache"})
