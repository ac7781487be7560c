"""PostgreSQL: users, subscriptions, payments, preferences and ratings.

One transaction per batch, a handful of set-based statements per transaction
(``INSERT ... SELECT FROM unnest(...)``), whatever the batch size.  The
``applied_events`` ledger makes every account event apply exactly once;
ratings use their own primary key the same way.  Migrations are versioned
SQL files applied at start under an advisory lock, so several workers can
start together.
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from importlib import resources
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import asyncpg

from ..codec import version
from ..records import Event
from .base import StoreBase

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x5742_4D47  # any constant shared by all workers

#: Where a record was read from: (Kafka partition, offset).
Source = Tuple[int, int]


class PostgresStore(StoreBase):
    name = "postgres"

    def __init__(self, dsn: str, migrate: bool = True) -> None:
        self._dsn = dsn
        #: Apply migrations on connect (the role owns the schema), or only
        #: check that ``python -m streamapp.migrate`` has applied them all.
        self._migrate = migrate
        self._pool: asyncpg.Pool | None = None
        self._connecting = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        async with self._connecting:
            if self._pool is None:
                pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=4,
                                                 command_timeout=30)
                try:
                    async with pool.acquire() as conn:
                        if self._migrate:
                            await migrate(conn)
                        else:
                            await check_schema(conn)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
        return self._pool

    async def connect(self) -> None:
        await self.pool()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> bool:
        pool = await self.pool()
        return await pool.fetchval("SELECT 1") == 1

    async def write_accounts(self, events: Sequence[Event]) -> int:
        """Apply account events once each; returns how many were new.

        One agent writes accounts (all four account topics, co-partitioned by
        user), so a worker has one account transaction at a time; deadlocks
        with the ratings agent's inferred users are retried like any
        transient error.
        """
        pool = await self.pool()
        async with pool.acquire() as conn, conn.transaction():
            fresh = await _claim(conn, events)
            if fresh:
                await _apply_accounts(conn, fresh)
            return len(fresh)

    async def write_ratings(self, events: Sequence[Event], sources: Mapping[str, Source]
                            ) -> Tuple[Dict[str, Tuple[int, int]], Dict[str, Optional[Source]]]:
        """Store ratings once each, with the Kafka source they were first read from.

        Returns the exact (votes, score_sum) of every title touched, and for
        every event id the (partition, offset) it was stored from (None for
        rows older than the source columns).
        """
        pool = await self.pool()
        async with pool.acquire() as conn, conn.transaction():
            await _infer_users(conn, {e.user_id for e in events}, events)
            at = [sources.get(e.event_id, (None, None)) for e in events]
            new_rows = await conn.fetch(
                """INSERT INTO ratings (event_id, user_id, movie_id, score, occurred_at,
                                        src_partition, src_offset)
                   SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::smallint[],
                                        $5::timestamptz[], $6::integer[], $7::bigint[])
                   ON CONFLICT (event_id) DO NOTHING
                   RETURNING movie_id, score""",
                *_columns(events, "event_id", "user_id", "movie_id", "score", "occurred_at"),
                [p for p, _ in at], [o for _, o in at])
            added: Dict[str, List[int]] = defaultdict(lambda: [0, 0])
            for row in new_rows:
                added[row["movie_id"]][0] += 1
                added[row["movie_id"]][1] += row["score"]
            if added:
                await conn.execute(
                    """INSERT INTO title_rating_totals AS t (movie_id, votes, score_sum)
                       SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])
                       ON CONFLICT (movie_id) DO UPDATE
                       SET votes = t.votes + EXCLUDED.votes,
                           score_sum = t.score_sum + EXCLUDED.score_sum""",
                    list(added), [v[0] for v in added.values()], [v[1] for v in added.values()])
            totals = await _totals(conn, sorted({e.movie_id for e in events}))
            stored = await conn.fetch(
                "SELECT event_id::text, src_partition, src_offset FROM ratings"
                " WHERE event_id = ANY($1::uuid[])", [e.event_id for e in events])
            first = {r["event_id"]: (None if r["src_offset"] is None
                                     else (r["src_partition"], r["src_offset"]))
                     for r in stored}
            return totals, {e.event_id: first.get(e.event_id) for e in events}

    async def title_totals(self, movie_ids: Optional[Sequence[str]] = None
                           ) -> Dict[str, Tuple[int, int]]:
        """Exact all-time (votes, score_sum) of these titles, (0, 0) for one
        never rated; without ``movie_ids``, of every rated title."""
        found = await _totals(await self.pool(), movie_ids)
        if movie_ids is None:
            return found
        return {movie: found.get(movie, (0, 0)) for movie in movie_ids}


async def _totals(db, movie_ids: Optional[Sequence[str]] = None) -> Dict[str, Tuple[int, int]]:
    """(votes, score_sum) per title from ``title_rating_totals`` (a pool or a connection)."""
    query = "SELECT movie_id, votes, score_sum FROM title_rating_totals"
    if movie_ids is None:
        rows = await db.fetch(query + " WHERE votes > 0")
    else:
        rows = await db.fetch(query + " WHERE movie_id = ANY($1::text[])", list(movie_ids))
    return {r["movie_id"]: (r["votes"], r["score_sum"]) for r in rows}


def known_migrations() -> List[str]:
    """Versions of the SQL files in ``migrations/``, in the order they apply."""
    folder = resources.files(__package__) / "migrations"
    return sorted(e.name.removesuffix(".sql") for e in folder.iterdir() if e.name.endswith(".sql"))


class SchemaNotReady(RuntimeError):
    """The database lacks migrations this code needs (and this role may not apply them).

    A RuntimeError, not a data error: the sinks retry it with backoff, so a
    worker started before ``python -m streamapp.migrate`` waits for it."""


async def check_schema(conn: asyncpg.Connection) -> None:
    """Fail clearly unless every migration of this code base has been applied."""
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        done: set = set()
    else:
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    missing = [v for v in known_migrations() if v not in done]
    if missing:
        user = await conn.fetchval("SELECT current_user")
        raise SchemaNotReady(
            f"PostgreSQL schema lacks migrations {', '.join(missing)}; role {user} does not migrate "
            f"(POSTGRES_MIGRATE_DSN is set): run `python -m streamapp.migrate` first")


async def migrate(conn: asyncpg.Connection) -> List[str]:
    """Apply the SQL files in ``migrations/`` that this database has not seen."""
    applied: List[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                                  version text PRIMARY KEY,
                                  applied_at timestamptz NOT NULL DEFAULT now())""")
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        folder = resources.files(__package__) / "migrations"
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            version = entry.name.removesuffix(".sql")
            if not entry.name.endswith(".sql") or version in done:
                continue
            await conn.execute(entry.read_text())
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    return applied


def _columns(events: Iterable[Event], *names: str) -> List[list]:
    events = list(events)
    return [[getattr(e, n) for e in events] for n in names]


async def _claim(conn: asyncpg.Connection, events: Sequence[Event]) -> List[Event]:
    """Record events in the ledger; return those not applied before, in order."""
    rows = await conn.fetch(
        """INSERT INTO applied_events (event_id, event_type, subject_id, occurred_at)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
           ON CONFLICT (event_id) DO NOTHING RETURNING event_id""",
        [e.event_id for e in events], [e.TYPE for e in events],
        [e.user_id for e in events], [e.occurred_at for e in events])
    fresh_ids = {str(r["event_id"]) for r in rows}
    seen: set = set()
    fresh = []
    for e in events:  # keep stream order; drop in-batch duplicates too
        if e.event_id in fresh_ids and e.event_id not in seen:
            seen.add(e.event_id)
            fresh.append(e)
    return fresh


def _last_per(events: Iterable[Event], *key_fields: str) -> List[Event]:
    """The last event per key (stream order is the order of truth)."""
    latest: Dict[tuple, Event] = {}
    for e in events:
        latest[tuple(getattr(e, f) for f in key_fields)] = e
    return list(latest.values())


def _newest_per(events: Iterable[Event], *key_fields: str) -> List[Tuple[str, Event]]:
    """(version, event) of the newest event per key ("newest wins", see
    ``codec.version``): the same whichever order the events came in."""
    newest: Dict[tuple, Tuple[str, Event]] = {}
    for e in events:
        key = tuple(getattr(e, f) for f in key_fields)
        v = version(e)
        if key not in newest or v > newest[key][0]:
            newest[key] = (v, e)
    return list(newest.values())


async def _infer_users(conn, user_ids: set, events: Sequence[Event]) -> None:
    """Create placeholder users that events refer to before their sign-up arrives."""
    if not user_ids:
        return
    now = max(e.occurred_at for e in events)
    await conn.execute(
        """INSERT INTO users (user_id, inferred, updated_at)
           SELECT u, true, $2 FROM unnest($1::text[]) AS u
           ON CONFLICT (user_id) DO NOTHING""", sorted(user_ids), now)


#: Profile fields that a sign-up sets and an update may change.
_PROFILE = ("display_name", "country", "email")


def _profiles(events: Iterable[Event]) -> List[list]:
    """One row per user: for each profile field its newest (value, version),
    the newest sign-up's (birth_year, registered_at, version), and the
    newest time seen.

    A sign-up sets every field, an update the fields it carries; each field
    ends with the value of the newest event that set it, whatever order or
    batches the events came in (the SQL keeps a field's version with it).
    """
    rows: Dict[str, list] = {}
    for e in events:
        # user_id, (display_name, v), (country, v), (email, v), birth_year,
        # registered_at, registered_v, at
        row = rows.setdefault(e.user_id, [e.user_id, None, None, None, None, None, None,
                                          None, None, None, e.occurred_at])
        v = version(e)
        for i, name in enumerate(_PROFILE):
            value = getattr(e, name)
            if value is not None and (row[2 + 2 * i] is None or v > row[2 + 2 * i]):
                row[1 + 2 * i], row[2 + 2 * i] = value, v
        if e.TYPE == "user.registered" and (row[9] is None or v > row[9]):
            row[7], row[8], row[9] = e.birth_year, e.occurred_at, v
        row[10] = max(row[10], e.occurred_at)
    return list(rows.values())


def _newer(column: str, table: str = "u") -> str:
    """SQL: the incoming version of ``column`` outranks the stored one."""
    return f'EXCLUDED.{column}_v > COALESCE({table}.{column}_v, \'\') COLLATE "C"'


def _take_if_newer(part: str, *columns: str) -> str:
    cond = _newer(part)
    return ",\n".join(f"{c} = CASE WHEN {cond} THEN EXCLUDED.{c} ELSE u.{c} END"
                      for c in (*columns, f"{part}_v"))


_UPSERT_PROFILES = f"""
    INSERT INTO users AS u (user_id, display_name, display_name_v, country, country_v,
                            email, email_v, birth_year, registered_at, registered_v,
                            inferred, updated_at)
    SELECT r.user_id, r.display_name, r.display_name_v, r.country, r.country_v,
           r.email, r.email_v, r.birth_year, r.registered_at, r.registered_v,
           r.registered_v IS NULL, r.at
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::int[], $9::timestamptz[], $10::text[], $11::timestamptz[])
        AS r(user_id, display_name, display_name_v, country, country_v, email, email_v,
             birth_year, registered_at, registered_v, at)
    ON CONFLICT (user_id) DO UPDATE SET
    {_take_if_newer("display_name", "display_name")},
    {_take_if_newer("country", "country")},
    {_take_if_newer("email", "email")},
    {_take_if_newer("registered", "birth_year", "registered_at")},
    inferred = u.inferred AND EXCLUDED.registered_v IS NULL,
    updated_at = GREATEST(u.updated_at, EXCLUDED.updated_at)"""


async def _apply_accounts(conn: asyncpg.Connection, events: List[Event]) -> None:
    """Apply fresh account events, one statement per kind.

    Whatever a later event replaces (a profile field, a subscription's plan,
    its start or cancellation, a preference) is decided by "newest wins"
    (``codec.version``), within the batch here and against what is stored
    in SQL, so batching and order do not change the result.
    """
    by_type: Dict[str, List[Event]] = defaultdict(list)
    for e in events:
        by_type[e.TYPE].append(e)

    profiles = _profiles(by_type["user.registered"] + by_type["user.updated"])
    if profiles:
        await conn.execute(_UPSERT_PROFILES,
                           *[[row[i] for row in profiles] for i in range(11)])

    await _infer_users(conn, {e.user_id for e in events
                              if e.TYPE not in ("user.registered", "user.updated")}, events)

    subs_referenced = [e for t in ("subscription.changed", "subscription.cancelled",
                                   "payment.processed", "payment.failed")
                       for e in by_type[t]]
    started = _newest_per(by_type["subscription.started"], "subscription_id")
    if started:
        await conn.execute(
            """INSERT INTO subscriptions AS s (subscription_id, user_id, plan, status,
                   price_cents, currency, started_at, updated_at, plan_v, started_v)
               SELECT r.subscription_id, r.user_id, r.plan, 'active', r.price_cents,
                      r.currency, r.at, r.at, r.v, r.v
               FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[],
                           $6::timestamptz[], $7::text[])
                   AS r(subscription_id, user_id, plan, price_cents, currency, at, v)
               ON CONFLICT (subscription_id) DO UPDATE SET
                   plan = CASE WHEN EXCLUDED.plan_v > COALESCE(s.plan_v, '') COLLATE "C"
                               THEN EXCLUDED.plan ELSE s.plan END,
                   price_cents = CASE WHEN EXCLUDED.plan_v > COALESCE(s.plan_v, '') COLLATE "C"
                                      THEN EXCLUDED.price_cents ELSE s.price_cents END,
                   currency = CASE WHEN EXCLUDED.plan_v > COALESCE(s.plan_v, '') COLLATE "C"
                                   THEN EXCLUDED.currency ELSE s.currency END,
                   plan_v = GREATEST(EXCLUDED.plan_v COLLATE "C", s.plan_v),
                   started_at = CASE WHEN EXCLUDED.started_v > COALESCE(s.started_v, '') COLLATE "C"
                                     THEN EXCLUDED.started_at ELSE s.started_at END,
                   started_v = GREATEST(EXCLUDED.started_v COLLATE "C", s.started_v),
                   status = CASE WHEN s.status = 'inferred' THEN 'active' ELSE s.status END,
                   updated_at = GREATEST(s.updated_at, EXCLUDED.updated_at)""",
            *_columns([e for _, e in started], "subscription_id", "user_id", "plan",
                      "price_cents", "currency", "occurred_at"), [v for v, _ in started])
    if subs_referenced:
        inferred = _last_per(subs_referenced, "subscription_id")
        await conn.execute(
            """INSERT INTO subscriptions (subscription_id, user_id, plan, status,
                   price_cents, currency, updated_at)
               SELECT r.sid, r.uid, 'unknown', 'inferred', 0, 'XXX', r.at
               FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS r(sid, uid, at)
               ON CONFLICT (subscription_id) DO NOTHING""",
            *_columns(inferred, "subscription_id", "user_id", "occurred_at"))

    changed = _newest_per(by_type["subscription.changed"], "subscription_id")
    if changed:
        await conn.execute(
            """UPDATE subscriptions s SET plan = r.plan, price_cents = r.price_cents,
                      currency = r.currency, plan_v = r.v,
                      updated_at = GREATEST(s.updated_at, r.at)
               FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::timestamptz[],
                           $6::text[])
                   AS r(sid, plan, price_cents, currency, at, v)
               WHERE s.subscription_id = r.sid
                 AND r.v > COALESCE(s.plan_v, '') COLLATE "C" """,
            *_columns([e for _, e in changed], "subscription_id", "plan", "price_cents",
                      "currency", "occurred_at"), [v for v, _ in changed])
    cancelled = _newest_per(by_type["subscription.cancelled"], "subscription_id")
    if cancelled:
        await conn.execute(
            """UPDATE subscriptions s SET status = 'cancelled',
                      cancelled_at = CASE WHEN r.v > COALESCE(s.cancel_v, '') COLLATE "C"
                                          THEN r.at ELSE s.cancelled_at END,
                      cancel_reason = CASE WHEN r.v > COALESCE(s.cancel_v, '') COLLATE "C"
                                           THEN r.reason ELSE s.cancel_reason END,
                      cancel_v = GREATEST(r.v COLLATE "C", s.cancel_v),
                      updated_at = GREATEST(s.updated_at, r.at)
               FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[])
                   AS r(sid, reason, at, v)
               WHERE s.subscription_id = r.sid""",
            *_columns([e for _, e in cancelled], "subscription_id", "reason", "occurred_at"),
            [v for v, _ in cancelled])

    payments = by_type["payment.processed"] + by_type["payment.failed"]
    if payments:
        await conn.execute(
            """INSERT INTO payments (payment_id, event_id, user_id, subscription_id, status,
                   amount_cents, currency, card_token, card_last4, failure_reason, occurred_at)
               SELECT r.pid, r.eid, r.uid, r.sid, r.status, r.amount, r.currency, r.token,
                      r.last4, r.reason, r.at
               FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                           $6::int[], $7::text[], $8::text[], $9::text[], $10::text[],
                           $11::timestamptz[])
                   AS r(pid, eid, uid, sid, status, amount, currency, token, last4, reason, at)
               ON CONFLICT (payment_id) DO NOTHING""",
            [e.payment_id for e in payments], [e.event_id for e in payments],
            [e.user_id for e in payments], [e.subscription_id for e in payments],
            [e.TYPE.split(".")[1] for e in payments], [e.amount_cents for e in payments],
            [e.currency for e in payments], [e.card_token for e in payments],
            [e.card_last4 for e in payments],
            [getattr(e, "failure_reason", None) for e in payments],
            [e.occurred_at for e in payments])

    prefs = _newest_per(by_type["preference.set"], "user_id", "key")
    if prefs:
        await conn.execute(
            """INSERT INTO preferences AS p (user_id, key, value, updated_at, v)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],
                                    $5::text[])
               ON CONFLICT (user_id, key) DO UPDATE SET value = EXCLUDED.value,
                   updated_at = EXCLUDED.updated_at, v = EXCLUDED.v
               WHERE EXCLUDED.v > COALESCE(p.v, '') COLLATE "C" """,
            *_columns([e for _, e in prefs], "user_id", "key", "value", "occurred_at"),
            [v for v, _ in prefs])
