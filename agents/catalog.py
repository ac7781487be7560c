"""Catalog edits → MongoDB, then drop the titles' cached copies in Redis."""
from streamapp.app import app
from streamapp.config import settings
from streamapp.pipeline import handle_batch, stop_before_commit
from streamapp.stores import stores
from streamapp.topics import catalog_topic
from tables.ratings import learn_genres


async def _forget_cached(events):
    """Drop cached title documents; tell the leaderboards the titles' genres."""
    learn_genres({e.movie_id: e.genres for e in events if e.TYPE == "title.upserted"})
    await stores.redis.forget_titles({e.movie_id for e in events})


@app.agent(catalog_topic)
async def catalog(stream):
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        with stop_before_commit("catalog"):
            await handle_batch("catalog", batch, [("mongodb", stores.mongo.write_catalog),
                                                  ("redis", _forget_cached)])
