"""``PostgresStore`` against a real PostgreSQL: ``write_ratings`` stores each
rating once and returns the exact totals of every title in the batch and the
source each rating was first stored from, with placeholder users for unknown
raters; and the pool's connections, released without a reset query, still
come back with no transaction open."""
import uuid
from datetime import datetime, timezone

from streamapp import records as r


def _rating(movie: str, user: str, score: int, event_id: str = "") -> r.RatingSubmitted:
    return r.RatingSubmitted(event_id=event_id or str(uuid.uuid4()),
                             occurred_at=datetime.now(timezone.utc),
                             user_id=user, movie_id=movie, score=score)


async def test_a_batch_is_stored_once_with_its_totals_and_first_sources(stores):
    pg = stores.postgres
    a, b = "pg-rt-a", "pg-rt-b"
    first = [_rating(a, "pg-rt-u1", 8), _rating(a, "pg-rt-u2", 6), _rating(b, "pg-rt-u1", 10)]
    twice = first[0]
    batch = [*first, twice]  # the same event twice in one batch
    sources = {e.event_id: (1, 100 + i) for i, e in enumerate(first)}

    totals, stored_from = await pg.write_ratings(batch, sources)

    assert totals == {a: (2, 14), b: (1, 10)}
    assert stored_from == {e.event_id: (1, 100 + i) for i, e in enumerate(first)}
    pool = await pg.pool()
    assert await pool.fetchval("SELECT count(*) FROM ratings WHERE movie_id = ANY($1::text[])",
                               [a, b]) == 3
    users = await pool.fetch("SELECT user_id, inferred FROM users WHERE user_id LIKE 'pg-rt-u%'"
                             " ORDER BY user_id")
    assert [(u["user_id"], u["inferred"]) for u in users] == [("pg-rt-u1", True),
                                                              ("pg-rt-u2", True)]


async def test_a_replayed_rating_keeps_its_first_source_and_its_title_is_still_reported(stores):
    pg = stores.postgres
    a, b = "pg-rt2-a", "pg-rt2-b"
    old = [_rating(a, "pg-rt2-u1", 4), _rating(b, "pg-rt2-u1", 7)]
    await pg.write_ratings(old, {old[0].event_id: (0, 5), old[1].event_id: (0, 6)})

    new = _rating(a, "pg-rt2-u2", 9)
    unsourced = _rating(a, "pg-rt2-u3", 1)
    # ``old[1]`` read again from elsewhere (a producer retry): not counted,
    # its title still reported with its unchanged totals.
    totals, stored_from = await pg.write_ratings(
        [old[1], new, unsourced], {old[1].event_id: (3, 900), new.event_id: (2, 7)})

    assert totals == {a: (3, 14), b: (1, 7)}
    assert stored_from == {old[1].event_id: (0, 6), new.event_id: (2, 7),
                           unsourced.event_id: None}
    assert await pg.title_totals([a, b]) == {a: (3, 14), b: (1, 7)}


async def test_a_known_user_is_not_turned_into_a_placeholder(stores):
    pg = stores.postgres
    pool = await pg.pool()
    await pool.execute("INSERT INTO users (user_id, display_name, email, registered_at, inferred,"
                       " updated_at) VALUES ('pg-rt3-u', 'Known', 'k@example.com', now(), false,"
                       " now())")
    totals, _ = await pg.write_ratings([_rating("pg-rt3-a", "pg-rt3-u", 5)], {})
    assert totals == {"pg-rt3-a": (1, 5)}
    row = await pool.fetchrow("SELECT display_name, inferred FROM users WHERE user_id = 'pg-rt3-u'")
    assert (row["display_name"], row["inferred"]) == ("Known", False)


async def test_an_empty_batch_writes_nothing(stores):
    assert await stores.postgres.write_ratings([], {}) == ({}, {})


async def test_a_connection_released_inside_a_transaction_comes_back_rolled_back(stores):
    pool = await stores.postgres.pool()
    user = f"pg-rt4-{uuid.uuid4().hex[:8]}"
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO users (user_id, inferred, updated_at)"
                           " VALUES ($1, true, now())", user)
        assert conn.is_in_transaction()
    for _ in range(4):  # every connection of the pool (max_size 4)
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
    assert await pool.fetchval("SELECT count(*) FROM users WHERE user_id = $1", user) == 0
