"""Ratings → PostgreSQL (durable rows + exact totals), MongoDB (aggregate on
the title), the rating tables (windowed counts), and a Redis event count."""
from streamapp.app import app
from streamapp.config import settings
from streamapp.pipeline import handle_batch, stop_before_commit
from streamapp.stores import stores
from streamapp.topics import ratings_topic
from tables.ratings import count_ratings


async def process(batch) -> None:
    totals = {}

    async def to_postgres(events):
        totals.update(await stores.postgres.write_ratings(events))

    async def to_mongo(events):
        await stores.mongo.write_rating_totals(totals)

    async def to_redis(events):
        await stores.redis.count_events(events)
        await stores.redis.forget_titles(totals)  # cached titles carry the aggregate

    accepted = await handle_batch("ratings", batch, [
        ("postgres", to_postgres), ("mongodb", to_mongo), ("redis", to_redis)])
    count_ratings(accepted)


@app.agent(ratings_topic)
async def ratings(stream):
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        with stop_before_commit("ratings"):
            await process(batch)
