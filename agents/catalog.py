"""Catalog edits → MongoDB, then drop the titles' cached copies in Redis."""
from streamapp.app import app
from streamapp.config import settings
from streamapp.pipeline import handle_batch
from streamapp.stores import stores
from streamapp.topics import catalog_topic


async def _forget_cached(events):
    await stores.redis.forget_titles(e.movie_id for e in events)


@app.agent(catalog_topic)
async def catalog(stream):
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        await handle_batch("catalog", batch, [("mongodb", stores.mongo.write_catalog),
                                              ("redis", _forget_cached)])
