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
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import datetime, timezone
from typing import (Any, Awaitable, Callable, ClassVar, Dict, FrozenSet, Iterable, List, Mapping,
                    Optional, Tuple)

import aiohttp
import orjson
from faust.web import Request, Response, View
from faust.web.exceptions import ServiceUnavailable, WebError
from yarl import URL

from tables.ratings import (HOPPING, TUMBLING, hopping_count, tumbling_count,
                            window_start)

from ..app import app, know_partitions
from ..config import settings
from ..connections import redact
from ..deployment import add_up, deployment, owners
from ..records import GENRES
from ..stores import stores
from ..stores.errors import STORE_ERRORS
from ..topics import STREAM_OF_TOPIC, STREAM_OF_TYPE, STREAMS, ratings_topic
from .auth import refusal, refuse

log = logging.getLogger(__name__)

#: Marks a title request one worker forwarded to another (never forwarded twice).
FORWARDED_HEADER = "X-Streamapp-Forwarded-By"


def _same_worker(a: URL, b: URL) -> bool:
    return (a.host, a.port) == (b.host, b.port)

#: User, title and other ids in paths and query strings.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
#: Leaderboards by name (``window`` and genre boards are built per request).
BOARDS = {"rated": stores.redis.keys.rated_all, "best": stores.redis.keys.best_rated,
          "watched": stores.redis.keys.most_watched, "window": None}
#: Window label -> (size, step) in seconds, as ``tables.ratings`` counts them.
WINDOWS: Dict[str, Tuple[int, int]] = {
    TUMBLING: (settings.tumbling_window_s, settings.tumbling_window_s),
    HOPPING: (settings.hopping_window_s, settings.hopping_step_s),
}
#: Kinds of audit documents (the audit store's ``doc_kind``).
AUDIT_KINDS = frozenset({"event", "outcome", "deadletter"})

#: Query strings: at most this long, this many parameters, values at most
#: this long.  The longest legitimate value is an ISO time (about 32
#: characters) and the longest legitimate query string about 200.
MAX_QUERY_LENGTH = 2048
MAX_PARAMS = 16
MAX_VALUE_LENGTH = 256

#: How long one request waits for a store before answering 503.
STORE_TIMEOUT_S = 5.0
#: How long the health check waits for each store.
PING_TIMEOUT_S = 2.0
#: Stores that must answer for the worker to be healthy (audit is optional).
REQUIRED_STORES = ("postgres", "mongodb", "redis")


class BadRequest(Exception):
    """A parameter failed validation (400)."""


class NotFound(Exception):
    """The thing asked for does not exist (404)."""


class StoreUnavailable(Exception):
    """A store failed or did not answer in time (503)."""

    def __init__(self, store: str, exc: BaseException) -> None:
        super().__init__(f"{store} unavailable")
        self.store = store
        self.detail = redact(f"{type(exc).__name__}: {exc}")[:300] if str(exc) else type(exc).__name__


async def from_store(store: str, call: Awaitable, timeout: float = STORE_TIMEOUT_S):
    """Await a store call; failures and timeouts become ``StoreUnavailable``."""
    try:
        return await asyncio.wait_for(call, timeout)
    except STORE_ERRORS as exc:
        raise StoreUnavailable(store, exc) from exc


# --- parameters -----------------------------------------------------------

def valid_id(value: Optional[str], what: str) -> str:
    # fullmatch: ``$`` alone would accept a trailing newline
    if value is None or not ID_PATTERN.fullmatch(value):
        raise BadRequest(f"invalid {what}: expected 1-64 characters of "
                         f"letters, digits and _.:- starting with a letter or digit")
    return value


def choice(query: Mapping[str, str], name: str, allowed: Iterable[str],
           default: Optional[str] = None) -> Optional[str]:
    value = query.get(name)
    if value is None or value == "":
        return default
    allowed = sorted(allowed)
    if value not in allowed:
        raise BadRequest(f"invalid {name}: expected one of {', '.join(allowed)}")
    return value


def int_in(query: Mapping[str, str], name: str, low: int, high: int, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,6}", raw) or not low <= int(raw) <= high:
        raise BadRequest(f"invalid {name}: expected an integer from {low} to {high}")
    return int(raw)


def iso_time(query: Mapping[str, str], name: str) -> Optional[datetime]:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        when = datetime.fromisoformat(raw)
        # in UTC, so that the audit store gets a time it can parse
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)
                ).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise BadRequest(f"invalid {name}: expected an ISO-8601 date or time") from None


def check_query(raw: str, query: Mapping[str, str], allowed: Optional[FrozenSet[str]]) -> None:
    """Refuse query strings no client of ours sends (see the module docstring)."""
    if len(raw) > MAX_QUERY_LENGTH:
        raise BadRequest(f"query string too long (at most {MAX_QUERY_LENGTH} characters)")
    items = list(query.items())  # not keys(): a multidict lists a repeated key once
    if len(items) > MAX_PARAMS:
        raise BadRequest(f"too many query parameters (at most {MAX_PARAMS})")
    if len({key for key, _ in items}) != len(items):
        raise BadRequest("repeated query parameter")
    for key, value in items:
        if allowed is not None and key not in allowed:
            raise BadRequest("unknown query parameter"
                             + (f": expected {', '.join(sorted(allowed))}" if allowed
                                else ": this view takes none"))
        if len(value) > MAX_VALUE_LENGTH:
            raise BadRequest(f"query parameter too long (at most {MAX_VALUE_LENGTH} characters)")


def optional_id(query: Mapping[str, str], name: str) -> Optional[str]:
    raw = query.get(name)
    return None if raw is None or raw == "" else valid_id(raw, name)


# --- conversions ------------------------------------------------------------

def iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def plain(row: Mapping[str, Any]) -> Dict[str, Any]:
    """A database row as JSON-ready values (datetimes as ISO strings)."""
    return {k: iso(v) for k, v in row.items()}


def title_doc(doc: Mapping[str, Any]) -> Dict[str, Any]:
    """A MongoDB title as JSON: ``_id`` as ``movie_id``, datetimes as ISO."""
    out = dict(doc)
    out["movie_id"] = out.pop("_id")
    return orjson.loads(orjson.dumps(out, default=str))


async def load_title(movie_id: str) -> Optional[Dict[str, Any]]:
    """Loader for the read-through cache: one title from MongoDB, as JSON."""
    docs = await stores.mongo.titles([movie_id])
    doc = docs.get(movie_id)
    return None if doc is None else title_doc(doc)


async def title_names(movie_ids: List[str]) -> Dict[str, Optional[str]]:
    """Names of many titles: one MGET on the cache, one MongoDB query for the rest.

    Titles loaded from MongoDB are put in the cache as ``cached_title`` does.
    """
    if not movie_ids:
        return {}
    keys = stores.redis.keys
    cached = await from_store("redis", stores.redis.get_many([keys.catalog(m) for m in movie_ids]))
    names: Dict[str, Optional[str]] = {}
    missing = []
    for movie_id, raw in zip(movie_ids, cached):
        if raw is None:
            missing.append(movie_id)
        else:
            names[movie_id] = orjson.loads(raw).get("title")
    if missing:
        docs = await from_store("mongodb", stores.mongo.titles(missing))
        if docs:
            await from_store("redis", stores.redis.cache_titles(
                {movie_id: title_doc(doc) for movie_id, doc in docs.items()}))
        for movie_id in missing:
            names[movie_id] = docs.get(movie_id, {}).get("title")
    return names


def window_board_key(label: str, now: float) -> Tuple[str, float]:
    """Redis key of the current window's board, as ``tables.ratings`` writes it."""
    size, step = WINDOWS[label]
    start = window_start(now, size, step)
    return stores.redis.keys.window(label, start), start


async def ensure_route_metadata(topic: str) -> None:
    """Make sure Faust's router can hash keys of ``topic`` (``know_partitions``)."""
    try:
        await know_partitions(app, topic, STORE_TIMEOUT_S)
    except Exception as exc:  # producer not started yet, broker unreachable ...
        raise StoreUnavailable("kafka", exc) from exc


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


# --- the base view ----------------------------------------------------------

class ApiView(View):
    """A JSON view whose errors are JSON too: 400, 404, 503, never a bare 500.

    ``personal = True``: the view returns personal data and answers only
    requests with a valid bearer token (``auth.refusal``), checked before
    anything else.  ``params``: the query parameters the view takes; any
    other is a 400 (None: not checked).
    """

    personal: ClassVar[bool] = False
    params: ClassVar[Optional[FrozenSet[str]]] = None

    async def get(self, request: Request, **kwargs: Any) -> Response:
        if self.personal:
            refused = refusal(request)
            if refused is not None:
                return refuse(self, *refused)
        try:
            check_query(request.query_string, request.query, self.params)
            response = await self.handle(request, **kwargs)
        except BadRequest as exc:
            return self.error(400, str(exc))
        except NotFound as exc:
            return self.error(404, str(exc))
        except StoreUnavailable as exc:
            log.warning("%s %s: %s (%s)", request.method, request.path, exc, exc.detail)
            return self.error(503, str(exc), store=exc.store, detail=exc.detail)
        except WebError:
            raise  # Faust answers these itself (e.g. 503 while partitions move)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return self.error(500, "internal error")
        response.headers["Cache-Control"] = "no-store"
        return response

    async def handle(self, request: Request, **kwargs: Any) -> Response:
        raise NotImplementedError


# --- titles -------------------------------------------------------------------

# Path parameters accept any segment (aiohttp's default pattern refuses braces
# with a bare 404) so that every malformed id gets the same JSON 400.
@app.page("/api/titles/{movie_id:[^/]+}/", name="api-title")
class TitleView(ApiView):
    """One title: catalog document, all-time totals, window counts, ranks.

    The window counts live in tables partitioned like the ratings topic, and a
    worker holds only the partitions it was assigned.  ``handle`` validates
    the id, asks Faust's router which worker the partition assignor gave the
    title's partition, and either answers here (same worker) or forwards the
    request to that worker's web server once and relays its answer.  A
    forwarded request carries ``FORWARDED_HEADER``; a worker that receives
    one but does not own the title either (the two disagree while partitions
    move) answers 503 instead of forwarding again, so a request never loops.
    While partitions are being reassigned the assignor may not know the
    owner: that is a 503 too.

    Why the ratings topic rather than the table's changelog key: a table
    update goes to the changelog partition of the event being processed,
    i.e. the ratings topic's partition of the title, which Kafka picks by
    hashing the raw key bytes (``m00000``).  Faust's ``table_route`` instead
    hashes the key as the table's changelog serializes it, JSON by default
    (``"m00000"``, quotes included), which names a different partition, and
    so often a different worker.  The assignor gives the same worker
    partition N of the ratings topic and of each table's changelog (they are
    co-partitioned), so the owner of the ratings partition is the owner of
    the counts.
    """

    params = frozenset()

    async def handle(self, request: Request, movie_id: str) -> Response:
        valid_id(movie_id, "movie_id")
        await ensure_route_metadata(ratings_topic.get_topic_name())
        try:
            owner = app.router.external_topic_key_store(ratings_topic, movie_id)
        except KeyError:
            raise ServiceUnavailable() from None  # the assignor knows no owner yet
        if _same_worker(owner, app.conf.canonical_url):
            return await self.title(movie_id)
        if request.headers.get(FORWARDED_HEADER):
            raise StoreUnavailable("worker", RuntimeError(
                "partition moving: the worker this came from and this one both see another owner"))
        try:
            return await self.forward(request, owner)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise StoreUnavailable("worker", exc) from exc

    async def forward(self, request: Request, owner: URL) -> Response:
        """Relay the request to the owning worker, marked as forwarded."""
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        headers[FORWARDED_HEADER] = str(app.conf.canonical_url)
        url = request.url.with_host(owner.host).with_port(owner.port)
        async with app.http_client.get(url, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=STORE_TIMEOUT_S)) as reply:
            return self.text(await reply.text(), content_type=reply.content_type,
                             status=reply.status)

    async def title(self, movie_id: str) -> Response:
        now = time.time()
        doc = await from_store("redis", stores.redis.cached_title(movie_id, load_title))
        totals = await from_store("postgres", stores.postgres.title_totals([movie_id]))
        votes, score_sum = totals[movie_id]
        if doc is None and not votes:
            raise NotFound(f"no title {movie_id}")
        t_key, t_start = window_board_key(TUMBLING, now)
        h_key, h_start = window_board_key(HOPPING, now)
        ranks = await asyncio.gather(*(
            from_store("redis", stores.redis.rank(key, movie_id))
            for key in (stores.redis.keys.rated_all, stores.redis.keys.best_rated,
                        stores.redis.keys.most_watched, t_key)))
        watching = await from_store("redis", stores.redis.now_watching(movie_id))
        body = dict(doc or {"movie_id": movie_id})
        body["counts"] = {
            "votes": votes,
            "score_sum": score_sum,
            "average": round(score_sum / votes, 4) if votes else None,
            TUMBLING: {"window_start": _utc(t_start),
                       "ratings": tumbling_count(movie_id)},
            HOPPING: {"window_start": _utc(h_start),
                      "ratings": hopping_count(movie_id, now)},
        }
        body["ranks"] = dict(zip(("most_rated", "best_rated", "most_watched",
                                  f"most_rated_{TUMBLING}"), ranks))
        body["now_watching"] = watching
        body["served_by"] = str(app.conf.canonical_url)
        return self.json(body)


# --- users --------------------------------------------------------------------

_USER_SQL = """SELECT user_id, email, display_name, country, birth_year, inferred,
                      registered_at, updated_at
               FROM users WHERE user_id = $1"""
_SUBSCRIPTIONS_SQL = """SELECT subscription_id, plan, status, price_cents, currency,
                               started_at, cancelled_at, cancel_reason, updated_at
                        FROM subscriptions WHERE user_id = $1
                        ORDER BY updated_at DESC, subscription_id LIMIT 50"""
_PREFERENCES_SQL = """SELECT key, value, updated_at FROM preferences
                      WHERE user_id = $1 ORDER BY key"""
# Card data never leaves the database: the token is not selected at all.
_PAYMENTS_SQL = """SELECT payment_id, subscription_id, status, amount_cents, currency,
                          card_last4, failure_reason, occurred_at
                   FROM payments WHERE user_id = $1
                   ORDER BY occurred_at DESC, payment_id DESC LIMIT 10"""


async def _user(user_id: str) -> Optional[Dict[str, Any]]:
    pool = await stores.postgres.pool()
    async with pool.acquire() as conn:
        # One snapshot for the four reads, so they agree with each other.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            user = await conn.fetchrow(_USER_SQL, user_id)
            if user is None:
                return None
            subs = await conn.fetch(_SUBSCRIPTIONS_SQL, user_id)
            prefs = await conn.fetch(_PREFERENCES_SQL, user_id)
            payments = await conn.fetch(_PAYMENTS_SQL, user_id)
    subscriptions = [plain(s) for s in subs]
    return {
        **plain(user),
        "current_subscriptions": [s for s in subscriptions if s["status"] == "active"],
        "subscriptions": subscriptions,
        "preferences": {p["key"]: {"value": p["value"], "updated_at": iso(p["updated_at"])}
                        for p in prefs},
        "payments": [plain(p) for p in payments],
    }


@app.page("/api/users/{user_id:[^/]+}/", name="api-user")
class UserView(ApiView):
    personal = True
    params = frozenset()

    async def handle(self, request: Request, user_id: str) -> Response:
        valid_id(user_id, "user_id")
        found = await from_store("postgres", _user(user_id))
        if found is None:
            raise NotFound(f"no user {user_id}")
        return self.json(found)


# --- leaderboards -----------------------------------------------------------------

@app.page("/api/leaderboards/", name="api-leaderboards")
class LeaderboardView(ApiView):
    """``board`` (default ``rated``): ``rated`` = most rated all time (or in
    ``genre``), ``best`` = best average with at least MIN_VOTES votes,
    ``watched`` = most sessions started, ``window`` = most rated in the
    current ``window`` (default the tumbling one)."""

    params = frozenset({"board", "window", "genre", "n"})

    async def handle(self, request: Request) -> Response:
        query = request.query
        board = choice(query, "board", BOARDS, default="rated")
        window = choice(query, "window", WINDOWS)
        genre = choice(query, "genre", GENRES)
        n = int_in(query, "n", 1, 100, default=10)
        if window and board != "window":
            raise BadRequest("window applies to board=window only")
        if genre and board != "rated":
            raise BadRequest("genre applies to board=rated only")
        body: Dict[str, Any] = {"board": board, "n": n}
        if board == "window":
            window = window or TUMBLING
            key, start = window_board_key(window, time.time())
            body.update(window=window, window_start=_utc(start))
        elif genre:
            key = stores.redis.keys.genre(genre)
            body["genre"] = genre
        else:
            key = BOARDS[board]
        rows = await from_store("redis", stores.redis.top(key, n))
        names = await title_names([movie_id for movie_id, _ in rows])
        body["entries"] = [
            {"rank": i, "movie_id": movie_id, "title": names.get(movie_id),
             "score": int(score) if board != "best" else score}
            for i, (movie_id, score) in enumerate(rows, 1)]
        return self.json(body)


# --- audit ------------------------------------------------------------------------

@app.page("/api/audit/", name="api-audit")
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


# --- health -------------------------------------------------------------------------

async def _probe(name: str, ping: Callable[[], Awaitable[bool]]) -> Dict[str, Any]:
    started = time.perf_counter()
    try:
        ok = bool(await asyncio.wait_for(ping(), PING_TIMEOUT_S))
        result: Dict[str, Any] = {"ok": ok}
    except asyncio.TimeoutError:
        result = {"ok": False, "error": f"no answer in {PING_TIMEOUT_S}s"}
    except Exception as exc:  # any failure means "not reachable", never a 500
        result = {"ok": False, "error": redact(f"{type(exc).__name__}: {exc}")[:300]}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


async def store_health() -> Dict[str, Dict[str, Any]]:
    """Ping every store concurrently, each with its own short timeout."""
    probes = {store.name: store.ping for store in stores.all()
              if store is not stores.audit or stores.audit.enabled}
    results = await asyncio.gather(*(_probe(name, ping) for name, ping in probes.items()))
    health = dict(zip(probes, results))
    if not stores.audit.enabled:
        health["audit"] = {"ok": False, "error": "disabled (no ELASTICSEARCH_URL)"}
    for name, result in health.items():
        result["required"] = name in REQUIRED_STORES
    return health


def _internal(topic: str) -> bool:
    """Topics not consumed for processing: table changelogs (read during
    recovery only, never committed) and Faust's assignor topic."""
    return topic.endswith("-changelog") or "__assignor" in topic


def local_partitions() -> Dict[str, List[int]]:
    """The source partitions this worker owns, per topic."""
    owned: Dict[str, List[int]] = {}
    for tp in sorted(app.consumer.assignment()):
        if not _internal(tp.topic):
            owned.setdefault(tp.topic, []).append(tp.partition)
    return owned


async def consumer_lag(workers: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Lag of the whole consumer group, per topic-partition, from Kafka.

    * ``highwater``: the partition's end offset (the last stable offset
      under exactly-once, so committed transaction markers count as one
      offset);
    * ``committed``: the group's next offset to read after its last commit
      (None before the first);
    * ``lag`` = ``highwater - committed`` (a partition never committed lags
      by its whole length);
    * ``owner``: the live worker that reports the partition as its own
      (None while partitions move).

    Table changelogs are left out (Faust reads them only to recover tables
    and never commits them).  Values are at most ``OFFSETS_TTL_S`` old.
    """
    offsets = await deployment.offsets(sorted(STREAM_OF_TOPIC))
    owned_by = owners(workers)
    topics: Dict[str, Dict[str, Any]] = {}
    for tp, (committed, end) in sorted(offsets.items()):
        lag = end - (committed or 0)
        entry = topics.setdefault(tp.topic, {"lag": 0, "partitions": {}})
        entry["partitions"][str(tp.partition)] = {
            "highwater": end, "committed": committed, "lag": lag,
            "owner": owned_by.get((tp.topic, tp.partition))}
        entry["lag"] += max(lag, 0)
    return topics


async def live_workers() -> List[Dict[str, Any]]:
    return await from_store("redis", deployment.workers(), timeout=PING_TIMEOUT_S)


@app.page("/api/health/", name="api-health")
class HealthView(ApiView):
    """Every store's reachability, the whole group's lag from Kafka, the live
    workers, and the partitions of the worker that answers."""

    async def handle(self, request: Request) -> Response:
        health = await store_health()
        try:
            workers: Optional[List[Dict[str, Any]]] = await live_workers()
        except StoreUnavailable:
            workers = None  # Redis is down: its health entry says so
        try:
            lag: Dict[str, Any] = {"group": deployment.group_id,
                                   "topics": await asyncio.wait_for(
                                       consumer_lag(workers or []), STORE_TIMEOUT_S)}
        except Exception as exc:  # Kafka unreachable, group not created yet ...
            lag = {"group": deployment.group_id, "topics": {},
                   "error": f"{type(exc).__name__}: {exc}"[:300]}
        try:
            mine: Dict[str, Any] = {"url": str(app.conf.canonical_url),
                                    "partitions": local_partitions()}
        except Exception as exc:  # consumer not started yet, rebalancing ...
            mine = {"url": str(app.conf.canonical_url), "partitions": {},
                    "error": f"{type(exc).__name__}: {exc}"[:300]}
        ok = all(health[name]["ok"] for name in REQUIRED_STORES)
        return self.json({"status": "ok" if ok else "degraded", "stores": health,
                          "consumer": lag, "workers": workers, "worker": mine,
                          "at": _utc(time.time())},
                         status=200 if ok else 503)


# --- stats --------------------------------------------------------------------------

@app.page("/api/stats/", name="api-stats")
class StatsView(ApiView):
    """Numbers of the whole deployment, whichever worker answers.

    ``events_consumed`` per stream is what the consumer group has committed
    (Kafka offsets: exact, and unchanged by restarts); ``stored``,
    ``rejected`` and ``retries`` add up the live workers' counters (each
    since its worker started); ``workers`` lists them.
    """

    async def handle(self, request: Request) -> Response:
        offsets = await from_store("kafka", deployment.offsets(sorted(STREAM_OF_TOPIC)))
        per_stream = {name: 0 for name in STREAMS}
        for tp, (committed, _) in offsets.items():
            stream = STREAM_OF_TOPIC.get(tp.topic)
            if stream is not None:
                per_stream[stream] += committed or 0
        try:
            workers: List[Dict[str, Any]] = await live_workers()
        except StoreUnavailable:
            workers = []  # the rest of the page is still worth showing
        try:
            watching: Optional[int] = await from_store(
                "redis", stores.redis.now_watching(), timeout=PING_TIMEOUT_S)
        except StoreUnavailable:
            watching = None
        return self.json({
            "at": time.time(),
            "events_consumed": per_stream,
            "events_total": sum(per_stream.values()),
            "stored": add_up(workers, "stored"),
            "rejected": add_up(workers, "rejected"),
            "retries": add_up(workers, "retries"),
            "now_watching": watching,
            "workers": [{"url": w["url"], "age_s": w["age_s"],
                         "partitions": sum(len(ps) for t, ps in w["partitions"].items()
                                           if not _internal(t))}
                        for w in workers],
        })
