"""Ratings, sessions and catalog agents through ``test_context()``, against
the real PostgreSQL, MongoDB (FerretDB locally) and Redis; tables in memory."""
import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from aiokafka import AIOKafkaConsumer

from harness import wait_until
from streamapp import records as r
from streamapp.codec import encode, key_of
from streamapp.config import settings
from streamapp.connections import kafka_client_options
from streamapp.stores import stores

pytestmark = pytest.mark.integration


def _now():
    return datetime.now(timezone.utc)


def _eid():
    return str(uuid.uuid4())


def _title(movie_id, **extra):
    return r.TitleUpserted(
        event_id=_eid(), occurred_at=_now(), movie_id=movie_id, title="The Unit Test",
        year=2020, genres=["drama"], cast=[r.CastMember(name="A. Actor", role="lead")],
        directors=["D. Rector"], similar=[], synopsis="A test.", runtime_min=90,
        artwork=[r.Artwork(kind="poster", url="https://img.example.com/p.jpg", width=10,
                           height=15, dominant_color="#000000")], **extra)


async def test_ratings_are_stored_once_counted_and_mirrored(app):
    from agents.ratings import ratings
    from streamapp.projections import projections
    from tables.ratings import hopping_count, tumbling_count

    movie = "mu-rated"
    events = [r.RatingSubmitted(event_id=_eid(), occurred_at=_now(), user_id=f"uu{i}",
                                movie_id=movie, score=score) for i, score in enumerate([8, 6, 10])]
    async with ratings.test_context() as agent:
        for e in events + events[:1]:  # the first one twice: counted once in the stores
            await agent.put(encode(e), key=key_of(e), timestamp=e.occurred_at.timestamp(),
                            wait=False)

        async def stored():
            pool = await stores.postgres.pool()
            return await pool.fetchval("SELECT votes FROM title_rating_totals WHERE movie_id=$1",
                                       movie) == 3
        assert await wait_until(stored, timeout=20, interval=0.2)
        await asyncio.sleep(0.5)
    assert await projections.flush_aggregates() >= 1  # the worker runs this on a timer
    doc = (await stores.mongo.titles([movie]))[movie]
    assert doc["ratings"] == {"count": 3, "sum": 24, "avg": 8.0}
    assert await stores.postgres.title_totals([movie]) == {movie: (3, 24)}  # the duplicate once
    # The minute the ratings fell in (``now`` may have moved to the next one).
    assert tumbling_count(movie, events[0].occurred_at.timestamp()) == 3
    assert hopping_count(movie, time.time()) == 3
    assert (await stores.redis.counts()).get("rating.submitted", 0) >= 3


async def test_a_late_rating_counts_all_time_but_not_in_a_closed_window(app):
    from agents.ratings import ratings
    from tables.ratings import hopping_count, rating_counts, tumbling_count

    movie = "mu-late"
    late_at = _now() - timedelta(seconds=settings.tumbling_window_s * 3)
    late = r.RatingSubmitted(event_id=_eid(), occurred_at=late_at, user_id="uu-late",
                             movie_id=movie, score=7)
    async with ratings.test_context() as agent:
        await agent.put(encode(late), key=key_of(late), timestamp=late_at.timestamp(), wait=False)
        async def stored():
            return (await stores.postgres.title_totals([movie]))[movie][0] == 1
        assert await wait_until(stored, timeout=20, interval=0.2)
        await asyncio.sleep(0.5)  # the tables count after the stores
    # Its minute had closed: not counted there; its pane (the hour) was open.
    (pane,) = rating_counts.table.window.ranges(late_at.timestamp())
    count, minutes, _ = rating_counts[movie][pane]
    assert count == 1 and minutes == {}
    assert tumbling_count(movie, late_at.timestamp()) == 0 and tumbling_count(movie) == 0
    assert hopping_count(movie, time.time()) == 1


async def test_sessions_drive_now_watching_and_replays_do_not_double_count(app):
    from agents.sessions import sessions

    sid, movie = f"wu-{uuid.uuid4().hex[:8]}", "mu-watched"
    start = r.SessionStarted(event_id=_eid(), occurred_at=_now(), session_id=sid, user_id="uu1",
                             movie_id=movie, device="tv")
    beat = r.SessionHeartbeat(event_id=_eid(), occurred_at=_now(), session_id=sid,
                              user_id="uu1", movie_id=movie, position_s=30)
    before = await stores.redis.client.zscore(stores.redis.keys.most_watched, movie) or 0
    async with sessions.test_context() as agent:
        for e in (start, beat, start):
            await agent.put(encode(e), key=key_of(e), wait=False)
        assert await wait_until(lambda: stores.redis.now_watching(movie), timeout=20, interval=0.2)
        await asyncio.sleep(0.5)
        assert await stores.redis.client.zscore(stores.redis.keys.most_watched, movie) == before + 1
        end = r.SessionEnded(event_id=_eid(), occurred_at=_now(), session_id=sid, user_id="uu1",
                             movie_id=movie, watched_s=30)
        await agent.put(encode(end), key=key_of(end), wait=False)

        async def ended():
            return await stores.redis.now_watching(movie) == 0
        assert await wait_until(ended, timeout=20, interval=0.2)
    session = await stores.redis.client.hgetall(stores.redis.keys.session(sid, movie))
    assert session[b"state"] == b"ended" and session[b"device"] == b"tv"
    assert 0 < await stores.redis.client.ttl(stores.redis.keys.session(sid, movie)) <= settings.session_ttl_s


async def test_catalog_upsert_lands_in_mongodb_and_refreshes_the_cache(app):
    from agents.catalog import catalog

    movie = "mu-catalog"
    loads = []

    async def load(movie_id):
        loads.append(movie_id)
        return (await stores.mongo.titles([movie_id])).get(movie_id)

    async with catalog.test_context() as agent:
        first = _title(movie)
        await agent.put(encode(first), key=key_of(first), wait=False)
        assert await wait_until(lambda: stores.mongo.titles([movie]), timeout=20, interval=0.2)
        await asyncio.sleep(0.3)
        cached = await stores.redis.cached_title(movie, load)
        assert cached["title"] == "The Unit Test" and cached["cast"][0]["name"] == "A. Actor"
        assert (await stores.redis.cached_title(movie, load))["title"] == "The Unit Test"
        assert loads == [movie]  # second read came from Redis

        renamed = _title(movie)
        renamed.title = "The Unit Test II"
        await agent.put(encode(renamed), key=key_of(renamed), wait=False)

        async def renamed_in_cache():
            doc = await stores.redis.cached_title(movie, load)
            return doc and doc["title"] == "The Unit Test II"
        assert await wait_until(renamed_in_cache, timeout=20, interval=0.3)


async def test_a_title_moves_between_genre_boards_when_its_genres_change(app):
    from agents.catalog import catalog
    from agents.ratings import ratings
    from streamapp.projections import projections

    movie = f"mu-genre-{uuid.uuid4().hex[:6]}"

    async def catalogued(title):
        async with catalog.test_context() as agent:
            await agent.put(encode(title), key=key_of(title), wait=False)

            async def landed():
                doc = (await stores.mongo.titles([movie])).get(movie)
                return doc and doc["genres"] == title.genres
            assert await wait_until(landed, timeout=20, interval=0.2)
            await asyncio.sleep(0.3)  # the cache and genre step after MongoDB

    await catalogued(_title(movie))  # drama
    rating = r.RatingSubmitted(event_id=_eid(), occurred_at=_now(), user_id="ug1",
                               movie_id=movie, score=9)
    async with ratings.test_context() as agent:
        await agent.put(encode(rating), key=key_of(rating),
                        timestamp=rating.occurred_at.timestamp(), wait=False)

        async def stored():
            return (await stores.postgres.title_totals([movie]))[movie] == (1, 9)
        assert await wait_until(stored, timeout=20, interval=0.2)
        await asyncio.sleep(0.3)
    await projections.flush_boards()  # the worker runs it on a timer
    assert await stores.redis.client.zscore(stores.redis.keys.genre("drama"), movie) == 1

    moved = _title(movie)
    moved.genres = ["comedy"]
    await catalogued(moved)
    await projections.flush_boards()
    assert await stores.redis.client.zscore(stores.redis.keys.genre("comedy"), movie) == 1
    assert await stores.redis.client.zscore(stores.redis.keys.genre("drama"), movie) is None


async def test_bad_input_goes_to_the_dead_letter_topic_with_its_reason(app):
    from agents.ratings import ratings

    marker = uuid.uuid4().hex.encode()
    raw = b'{"type": "rating.submitted", "oops": "' + marker + b'"'
    async with ratings.test_context() as agent:
        await agent.put(raw, key=b"m-bad", wait=False)
        await asyncio.sleep(1.0)
    consumer = AIOKafkaConsumer(settings.output_topic("deadletter"), **kafka_client_options(settings),
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        deadline = time.monotonic() + 20
        found = None
        while time.monotonic() < deadline and not found:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    if rec.value == raw:
                        found = rec
    finally:
        await consumer.stop()
    assert found is not None, "dead letter not found"
    headers = dict(found.headers)
    assert headers["x-reason"] == b"malformed_json"
    assert headers["x-source-topic"].endswith(b".ratings")


async def test_dollar_strings_in_catalog_fields_are_plain_values(app):
    from agents.catalog import catalog

    movie = "mu-hostile"
    event = _title(movie)
    event.title = "$where: function() { return true }"
    event.synopsis = '{"$gt": ""}'
    async with catalog.test_context() as agent:
        await agent.put(encode(event), key=key_of(event), wait=False)
        assert await wait_until(lambda: stores.mongo.titles([movie]), timeout=20, interval=0.2)
    doc = (await stores.mongo.titles([movie]))[movie]
    assert doc["title"] == "$where: function() { return true }"
    assert doc["synopsis"] == '{"$gt": ""}'
