"""JSON read views, served by every worker's web server.

Routes (all ``GET``, all answer JSON; errors are ``{"error": "..."}``):

``/api/titles/{movie_id}/``
    The catalog document (MongoDB through the Redis read-through cache), the
    title's live rating counts from the tables and its leaderboard ranks.
    Table-backed, so routed to the worker that owns the title's partition
    (see ``TitleView``).  404 when the title is unknown.
``/api/users/{user_id}/``
    PostgreSQL profile, subscriptions, preferences and the last ten payments
    (never the card token).  404 when the user is unknown.
``/api/leaderboards/?board=rated|best|watched|window&window=1m|1h&genre=&n=10``
    A Redis leaderboard with title names.
``/api/audit/?event_type=&user_id=&kind=&since=&until=&size=``
    Search of the audit store; 503 when it is disabled or unreachable.
``/api/health/``
    Every store's reachability, the consumer group's lag per topic-partition
    (from Kafka, all partitions, with the worker that owns each), the live
    workers, and the partitions of the worker that answers; 200 when
    PostgreSQL, MongoDB and Redis answer (audit is optional), else 503.
``/api/stats/``
    The deployment's numbers (all workers): events consumed per stream (the
    group's committed offsets), stored/rejected/retried (the live workers'
    counters added up), "now watching", and the live workers.

Personal data (``/api/users/...``, ``/api/audit/``) needs
``Authorization: Bearer <token>`` with one of ``API_TOKENS``: 401 without a
valid token, 403 when no tokens are configured (``auth``).  Titles,
leaderboards, health and stats are public.

Every parameter is checked against a fixed pattern or set before anything
else happens: a bad one is a 400.  So is a query string with a parameter the
view does not take (``user_id[$ne]=``), a repeated parameter, more than
``MAX_PARAMS`` parameters, a value longer than ``MAX_VALUE_LENGTH`` or more
than ``MAX_QUERY_LENGTH`` characters in all.  A store that fails or does not
answer in time is a 503 naming the store.  Nothing a client sends can
produce a 500.

Modules: ``params`` (parameter checks), ``api`` (the ``ApiView`` base, store
calls, JSON conversions), one module per group of views (``titles``,
``users``, ``boards``, ``audit_search``, ``health``).  This module registers
every route in ``ROUTES``: a new view module adds its line there.  The
dashboard (``dashboard``, ``charts``: ``/api/series/``) and the audit
explorer (``audit_views``: ``/audit/``, ``/api/audit/search/``,
``/api/audit/doc/{id}/``) register theirs with ``app.page`` and import
the shared names from here (``__all__``).
"""
from __future__ import annotations

from typing import List, Tuple, Type

from faust.web import View

from ..app import app
from ..records import GENRES
from ..stores.errors import STORE_ERRORS
from .api import STORE_TIMEOUT_S, ApiView, NotFound, StoreUnavailable, from_store, iso, plain
from .audit_search import AUDIT_KINDS, AuditView
from .boards import BOARDS, LeaderboardView
from .health import PING_TIMEOUT_S, REQUIRED_STORES, HealthView, StatsView, store_health
from .params import (
    ID_PATTERN,
    MAX_PARAMS,
    MAX_QUERY_LENGTH,
    MAX_VALUE_LENGTH,
    BadRequest,
    check_query,
    choice,
    int_in,
    iso_time,
    optional_id,
    valid_id,
)
from .titles import FORWARDED_HEADER, WINDOWS, TitleView, load_title, title_names
from .users import UserView

__all__ = [
    "AUDIT_KINDS", "BOARDS", "FORWARDED_HEADER", "GENRES", "ID_PATTERN", "MAX_PARAMS",
    "MAX_QUERY_LENGTH", "MAX_VALUE_LENGTH", "PING_TIMEOUT_S", "REQUIRED_STORES", "ROUTES",
    "STORE_ERRORS", "STORE_TIMEOUT_S", "WINDOWS", "ApiView", "AuditView", "BadRequest",
    "HealthView", "LeaderboardView", "NotFound", "StatsView", "StoreUnavailable", "TitleView",
    "UserView", "check_query", "choice", "from_store", "int_in", "iso", "iso_time",
    "load_title", "optional_id", "plain", "store_health", "title_names", "valid_id",
]

#: Every JSON route: (path, name, view class), one line each.  Path
#: parameters accept any segment (aiohttp's default pattern refuses braces
#: with a bare 404) so that every malformed id gets the same JSON 400.
ROUTES: List[Tuple[str, str, Type[View]]] = [
    ("/api/titles/{movie_id:[^/]+}/", "api-title", TitleView),
    ("/api/users/{user_id:[^/]+}/", "api-user", UserView),
    ("/api/leaderboards/", "api-leaderboards", LeaderboardView),
    ("/api/audit/", "api-audit", AuditView),
    ("/api/health/", "api-health", HealthView),
    ("/api/stats/", "api-stats", StatsView),
]

for _path, _name, _view in ROUTES:
    app.page(_path, name=_name)(_view)
