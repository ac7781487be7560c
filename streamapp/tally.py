"""Count what each store holds, in the shape of the simulator's ``expect``.

Used by the integration tests, ``make chaos`` and the benchmark to compare
what was produced with what landed, store by store.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple, cast

from aiokafka import AIOKafkaConsumer, TopicPartition

from .config import Settings, settings
from .connections import kafka_client_options
from .stores import Stores


async def postgres_counts(stores: Stores) -> Dict[str, int]:
    pool = await stores.postgres.pool()
    row = await pool.fetchrow("""
        SELECT (SELECT count(*) FROM users WHERE NOT inferred) AS users,
               (SELECT count(*) FROM users WHERE inferred) AS inferred_users,
               (SELECT count(*) FROM subscriptions WHERE status <> 'inferred') AS subscriptions,
               (SELECT count(*) FROM payments) AS payments,
               (SELECT count(*) FROM preferences) AS preferences,
               (SELECT count(*) FROM ratings) AS ratings,
               (SELECT coalesce(sum(score), 0) FROM ratings) AS rating_score_sum,
               (SELECT count(*) FROM applied_events) AS applied_events""")
    assert row is not None  # a SELECT without FROM returns one row
    return {k: int(v) for k, v in row.items()}


async def mongo_counts(stores: Stores) -> Dict[str, int]:
    # Plain ``count`` commands and one projected scan, no aggregation cursors:
    # FerretDB's aggregation under concurrent writes is its weakest path.
    movies = await stores.mongo.movies()
    db = movies.database

    async def count(query: dict) -> int:
        return int((await db.command({"count": movies.name, "query": query}))["n"])

    ratings = await (await stores.mongo.title_ratings()).find({}, {"count": 1}).to_list(None)
    return {"movies": await count({"title": {"$exists": True}}),
            "removed": await count({"removed": True}),
            "rated_votes": sum(int(d["count"]) for d in ratings)}


async def redis_counts(stores: Stores) -> Dict[str, int]:
    types = ("session.started", "session.heartbeat", "session.ended", "rating.submitted")
    counted = await stores.redis.counts()
    counts = {t: counted.get(t, 0) for t in types}
    watched = cast(List[Tuple[bytes, float]], await stores.redis.client.zrange(
        stores.redis.keys.most_watched, 0, -1, withscores=True))
    counts["most_watched_total"] = int(sum(score for _, score in watched))
    return counts


async def topic_size(topic: str, bootstrap: str, cfg: Settings = settings) -> int:
    """Messages currently in a topic (sum of end minus beginning offsets)."""
    consumer = AIOKafkaConsumer(**kafka_client_options(cfg, bootstrap))
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return 0
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()


async def tally(stores: Stores, cfg: Settings) -> Dict[str, Any]:
    return {
        "postgres": await postgres_counts(stores),
        "mongodb": await mongo_counts(stores),
        "redis": await redis_counts(stores),
        "deadletter": await topic_size(cfg.output_topic("deadletter"), cfg.kafka_bootstrap, cfg),
    }
