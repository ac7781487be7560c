"""PostgreSQL: users, subscriptions, payments, preferences and ratings.

One transaction per batch, a handful of set-based statements per transaction
(``INSERT ... SELECT FROM unnest(...)``), whatever the batch size; a ratings
batch is a single statement, so a single round trip.  The
``applied_events`` ledger makes every account event apply exactly once;
ratings use their own primary key the same way.  Migrations are versioned
SQL files applied at start under an advisory lock, so several workers can
start together.  The account topics' statements are in
``postgres_accounts``.
"""
from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import asyncpg

from ..records import Event
from .base import StoreBase
from .postgres_accounts import Conn, apply_accounts, claim, columns

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x5742_4D47  # any constant shared by all workers

#: Where a record was read from: (Kafka partition, offset).
Source = Tuple[int, int]


class _Connection(asyncpg.Connection):
    """A connection that needs no reset query when it goes back to the pool.

    asyncpg resets every released connection with a round trip (unlock
    advisory locks, close cursors, unlisten, reset settings), one more per
    batch.  This store's connections leave none of that behind: its only
    lock is the migration's transaction lock, it sets nothing, listens to
    nothing, and keeps no cursor past a transaction.  A transaction left
    open is still rolled back on release (asyncpg does that whatever the
    query).
    """

    def get_reset_query(self) -> str:
        return ""


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
                                                 command_timeout=30, connection_class=_Connection)
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
        return bool(await pool.fetchval("SELECT 1") == 1)

    async def write_accounts(self, events: Sequence[Event]) -> int:
        """Apply account events once each; returns how many were new.

        One agent writes accounts (all four account topics, co-partitioned by
        user), so a worker has one account transaction at a time; deadlocks
        with the ratings agent's inferred users are retried like any
        transient error.
        """
        pool = await self.pool()
        async with pool.acquire() as conn, conn.transaction():
            fresh = await claim(conn, events)
            if fresh:
                await apply_accounts(conn, fresh)
            return len(fresh)

    async def write_ratings(self, events: Sequence[Event], sources: Mapping[str, Source]
                            ) -> Tuple[Dict[str, Tuple[int, int]], Dict[str, Optional[Source]]]:
        """Store ratings once each, with the Kafka source they were first read from.

        Returns the exact (votes, score_sum) of every title touched, and for
        every event id the (partition, offset) it was stored from (None for
        rows older than the source columns).
        """
        if not events:
            return {}, {}
        at = [sources.get(e.event_id, (None, None)) for e in events]
        rows = await (await self.pool()).fetch(
            _WRITE_RATINGS,
            *columns(events, "event_id", "user_id", "movie_id", "score", "occurred_at"),
            [p for p, _ in at], [o for _, o in at], max(e.occurred_at for e in events))
        totals: Dict[str, Tuple[int, int]] = {}
        first: Dict[str, Optional[Source]] = {}
        for kind, key, a, b in rows:
            if kind == "t":
                totals[key] = (a, b)
            else:
                first[key] = None if b is None else (a, b)
        return totals, {e.event_id: first.get(e.event_id) for e in events}

    async def title_totals(self, movie_ids: Optional[Sequence[str]] = None
                           ) -> Dict[str, Tuple[int, int]]:
        """Exact all-time (votes, score_sum) of these titles, (0, 0) for one
        never rated; without ``movie_ids``, of every rated title."""
        found = await _totals(await self.pool(), movie_ids)
        if movie_ids is None:
            return found
        return {movie: found.get(movie, (0, 0)) for movie in movie_ids}


#: ``write_ratings`` in one statement, so one round trip (and its own
#: transaction): placeholder users for raters not seen yet (in ``user_id``
#: order, as ``infer_users``, so concurrent batches lock rows in one order),
#: the ratings not stored before, the totals they add to, then rows of two
#: kinds: ``t`` (title, votes, score sum) for every title of the batch, and
#: ``s`` (event id, partition, offset) with the source each event was first
#: stored from.  The statement's CTEs all see the tables as they were before
#: it, so a title's totals are the upsert's result when the batch added to
#: them and the stored row otherwise, and an event's source is the one just
#: inserted or the one stored before; the foreign key from ``ratings`` to
#: ``users`` is checked at the end of the statement, after the placeholders.
_WRITE_RATINGS = """
    WITH batch AS (
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::smallint[],
                             $5::timestamptz[], $6::integer[], $7::bigint[])
            AS b(event_id, user_id, movie_id, score, occurred_at, src_partition, src_offset)
    ), inferred AS (
        INSERT INTO users (user_id, inferred, updated_at)
        SELECT DISTINCT user_id, true, $8::timestamptz FROM batch ORDER BY user_id
        ON CONFLICT (user_id) DO NOTHING
    ), inserted AS (
        INSERT INTO ratings (event_id, user_id, movie_id, score, occurred_at,
                             src_partition, src_offset)
        SELECT * FROM batch
        ON CONFLICT (event_id) DO NOTHING
        RETURNING event_id, movie_id, score, src_partition, src_offset
    ), added AS (
        INSERT INTO title_rating_totals AS t (movie_id, votes, score_sum)
        SELECT movie_id, count(*), sum(score) FROM inserted GROUP BY movie_id ORDER BY movie_id
        ON CONFLICT (movie_id) DO UPDATE
        SET votes = t.votes + EXCLUDED.votes, score_sum = t.score_sum + EXCLUDED.score_sum
        RETURNING movie_id, votes, score_sum
    )
    SELECT 't' AS kind, movie_id AS key, votes AS a, score_sum AS b FROM added
    UNION ALL
    SELECT 't', t.movie_id, t.votes, t.score_sum FROM title_rating_totals t
    WHERE t.movie_id IN (SELECT movie_id FROM batch)
      AND t.movie_id NOT IN (SELECT movie_id FROM added)
    UNION ALL
    SELECT 's', event_id::text, src_partition, src_offset FROM inserted
    UNION ALL
    SELECT 's', r.event_id::text, r.src_partition, r.src_offset FROM ratings r
    WHERE r.event_id IN (SELECT event_id FROM batch)"""


async def _totals(db: Union[Conn, asyncpg.Pool],
                  movie_ids: Optional[Sequence[str]] = None) -> Dict[str, Tuple[int, int]]:
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


async def check_schema(conn: Conn) -> None:
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


async def migrate(conn: Conn) -> List[str]:
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
