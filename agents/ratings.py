"""Ratings → PostgreSQL (durable rows + exact totals), MongoDB (aggregate on
the title), the rating tables (windowed counts), and a Redis event count."""
from streamapp.app import app
from streamapp.config import settings
from streamapp.pipeline import handle_batch
from streamapp.stores import stores
from streamapp.topics import ratings_topic
from tables.ratings import count_ratings


@app.agent(ratings_topic)
async def ratings(stream):
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        totals = {}

        async def to_postgres(events):
            totals.update(await stores.postgres.write_ratings(events))

        async def to_mongo(events):
            await stores.mongo.write_rating_totals(totals)

        accepted = await handle_batch("ratings", batch, [
            ("postgres", to_postgres), ("mongodb", to_mongo),
            ("redis", stores.redis.count_events)])
        count_ratings(accepted)
