"""Sessions and counters in Redis, from the contract's rules, on the real
server: a standalone Redis always, and a Redis Cluster when one is up
(``TEST_REDIS_CLUSTER_URL``, which ``make test`` sets when it starts the
cluster profile).

The rule (docs/events.md): the newest ``occurred_at`` wins, the greater
``event_id`` on a tie; an ended session stays ended.  The result must be the
same whether the events arrive in one batch or in two, in either order, and
a replay counts nothing twice.
"""
from __future__ import annotations

import itertools
import os
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from harness import isolated_env
from streamapp import records as r
from streamapp.stores.redis import RedisStore

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def _targets():
    yield pytest.param("standalone", id="standalone")
    yield pytest.param("cluster", id="cluster", marks=pytest.mark.skipif(
        not os.environ.get("TEST_REDIS_CLUSTER_URL"), reason="no Redis Cluster up"))


@pytest.fixture(params=list(_targets()))
async def store(request):
    tag = f"r{uuid.uuid4().hex[:8]}:"
    if request.param == "cluster":
        s = RedisStore(os.environ["TEST_REDIS_CLUSTER_URL"], cluster=True, prefix=tag,
                       session_ttl_s=3600, dedupe_ttl_s=3600, cache_ttl_s=60)
    else:
        s = RedisStore(isolated_env()["REDIS_URL"], prefix=tag,
                       session_ttl_s=3600, dedupe_ttl_s=3600, cache_ttl_s=60)
    yield s
    # The database is shared with other test sessions: delete only our keys
    # (one at a time: on a cluster they live in many slots).
    async for key in s.client.scan_iter(match=tag + "*", count=1000):
        await s.client.delete(key)
    await s.close()


def _session(n: int, movie: str):
    """Session ``n``: started, two heartbeats at one instant, ended."""
    common = dict(session_id=f"s{n}", user_id="u0000042", movie_id=movie)
    return [
        r.SessionStarted(event_id=str(uuid.uuid4()), occurred_at=T0, device="tv", **common),
        r.SessionHeartbeat(event_id=f"00000000-0000-4000-8000-{n:012d}",
                           occurred_at=T0 + timedelta(seconds=30), position_s=30, **common),
        # same instant: the greater event id wins
        r.SessionHeartbeat(event_id=f"ffffffff-ffff-4fff-bfff-{n:012d}",
                           occurred_at=T0 + timedelta(seconds=30), position_s=31, **common),
        r.SessionEnded(event_id=str(uuid.uuid4()), occurred_at=T0 + timedelta(seconds=60),
                       watched_s=60, **common),
    ]


async def _state(store: RedisStore, sid: str, movie: str) -> dict:
    raw = await store.client.hgetall(store.keys.session(sid, movie))
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    return {k: fields.get(k) for k in ("state", "device", "position_s", "watched_s", "last_seen",
                                       "started_at", "ended_at")}


async def test_session_state_is_the_same_in_any_order_and_batching(store):
    movie = "m-order"
    results = []
    for n, order in enumerate(itertools.permutations(range(4))):
        sid, events = f"s{n}", _session(n, movie)
        ordered = [events[i] for i in order]
        cut = n % 4  # 0: one batch; else two batches cut at that point
        if cut:
            await store.write_sessions(ordered[:cut])
            await store.write_sessions(ordered[cut:])
        else:
            await store.write_sessions(ordered)
        await store.write_sessions(ordered)  # a replay changes nothing
        results.append(await _state(store, sid, movie))
    first = results[0]
    assert first == {"state": "ended", "device": "tv", "position_s": "31", "watched_s": "60",
                     "last_seen": (T0 + timedelta(seconds=60)).isoformat(),
                     "started_at": T0.isoformat(),
                     "ended_at": (T0 + timedelta(seconds=60)).isoformat()}
    assert all(result == first for result in results), results
    # every session ended: nobody is watching, whatever the order
    assert await store.now_watching(movie) == 0 and await store.now_watching() == 0
    counts = await store.counts()
    sessions = len(results)
    assert counts["session.started"] == sessions and counts["session.ended"] == sessions
    assert counts["session.heartbeat"] == 2 * sessions
    assert counts["watched_seconds"] == 60 * sessions
    assert await store.client.zscore(store.keys.most_watched, movie) == sessions


async def test_events_are_counted_once_across_shards(store):
    ratings = [r.RatingSubmitted(event_id=str(uuid.uuid4()), occurred_at=T0, user_id="u1",
                                 movie_id=f"m{i % 7}", score=5) for i in range(200)]
    assert await store.count_events(ratings[:150]) == 150
    assert await store.count_events(ratings) == 50  # the first 150 were counted before
    assert (await store.counts())["rating.submitted"] == 200
    shards = {store.keys.shard_of(e.event_id) for e in ratings}
    assert len(shards) == store.keys.shards  # 200 ids reach every shard


async def test_boards_and_cache_work_across_slots(store):
    movies = [f"m{i:05d}" for i in range(40)]
    await store.cache_titles({m: {"title": f"Title {m}"} for m in movies})
    values = await store.get_many([store.keys.catalog(m) for m in movies])
    assert all(v is not None for v in values)
    await store.forget_titles(movies)
    assert await store.get_many([store.keys.catalog(m) for m in movies]) == [None] * 40
    panes = [store.keys.window("5m", 1000 + 300 * i) for i in range(3)]
    hour = store.keys.window("1h", 1000)
    await store.mirror({panes[0]: {"a": 1}, panes[1]: {"a": 2, "b": 1},
                        store.keys.rated_all: {"a": 3, "b": 1}},
                       {p: 60 for p in panes}, unions={hour: panes})
    assert await store.top(hour) == [("a", 3.0), ("b", 1.0)]
    assert await store.rank(store.keys.rated_all, "b") == 2


@pytest.mark.skipif(not os.environ.get("TEST_REDIS_CLUSTER_URL"), reason="no Redis Cluster up")
async def test_cluster_writes_are_held_by_a_replica_before_they_count(caplog):
    """A board write returns only once the master's replica holds it; with the
    replica stopped it waits ``REPLICA_WAIT_MS`` and says the write is alone."""
    import signal
    import time

    import redis.asyncio as aioredis

    from streamapp.stores.redis_replicas import REPLICA_WAIT_MS

    tag = f"r{uuid.uuid4().hex[:8]}:"
    s = RedisStore(os.environ["TEST_REDIS_CLUSTER_URL"], cluster=True, prefix=tag,
                   session_ttl_s=3600, dedupe_ttl_s=3600, cache_ttl_s=60)
    board = s.keys.rated_all
    await s.mirror({board: {"m1": 1}}, {})
    master = s.client.get_node_from_key(board)
    info = await s.client.info("replication", target_nodes=master)
    replica = aioredis.Redis(host=info["slave0"]["ip"], port=int(info["slave0"]["port"]))
    pid = int((await replica.info("server"))["process_id"])
    try:
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            await s.mirror({board: {"m1": 2}}, {})
            waited = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        assert waited >= REPLICA_WAIT_MS / 1000 * 0.9
        assert "no replica held" in caplog.text

        await s.mirror({board: {"m1": 3}}, {})
        await replica.execute_command("READONLY")
        assert await replica.zscore(board, "m1") == 3
    finally:
        await s.client.delete(board)
        await replica.aclose()
        await s.close()
