"""``/api/audit/``: search of the audit store (personal data)."""
from __future__ import annotations

from faust.web import Request, Response

from ..stores import stores
from ..topics import STREAM_OF_TYPE
from .api import ApiView, from_store
from .params import BadRequest, choice, int_in, iso_time, optional_id

#: Kinds of audit documents (the audit store's ``doc_kind``).
AUDIT_KINDS = frozenset({"event", "outcome", "deadletter"})


class AuditView(ApiView):
    personal = True
    params = frozenset({"event_type", "user_id", "kind", "since", "until", "size"})

    async def handle(self, request: Request) -> Response:
        query = request.query
        event_type = choice(query, "event_type", STREAM_OF_TYPE)
        user_id = optional_id(query, "user_id")
        kind = choice(query, "kind", AUDIT_KINDS)
        since = iso_time(query, "since")
        until = iso_time(query, "until")
        size = int_in(query, "size", 1, 100, default=20)
        if since and until and since > until:
            raise BadRequest("since is after until")
        if not stores.audit.enabled:
            return self.error(503, "audit store disabled", store="audit")
        found = await from_store("audit", stores.audit.search(
            event_type=event_type, user_id=user_id, doc_kind=kind,
            since=since, until=until, size=size))
        return self.json({"total": found["total"], "hits": found["hits"]})
