"""Catalog edits → MongoDB, then drop the titles' cached copies in Redis."""
from typing import Dict

from streamapp.app import app
from streamapp.codec import version
from streamapp.config import settings
from streamapp.pipeline import handle_batch, stop_before_commit
from streamapp.projections import projections
from streamapp.stores import stores
from streamapp.topics import catalog_topic

#: Rank (``codec.version``) of the newest upsert this worker told the
#: leaderboards about, per title: an older upsert arriving later (another
#: batch, a producer's late resend) does not bring back its stale genres.
_told: Dict[str, str] = {}


async def _forget_cached(events):
    """Drop cached title documents; tell the leaderboards the titles' genres."""
    newest: Dict[str, tuple] = {}
    for e in events:
        if e.TYPE == "title.upserted":
            v = version(e)
            if v > max(_told.get(e.movie_id, ""), newest.get(e.movie_id, ("",))[0]):
                newest[e.movie_id] = (v, e.genres)
    _told.update((movie, v) for movie, (v, _) in newest.items())
    projections.learn_genres({movie: genres for movie, (_, genres) in newest.items()})
    await stores.redis.forget_titles({e.movie_id for e in events})


@app.agent(catalog_topic)
async def catalog(stream):
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        with stop_before_commit("catalog"):
            await handle_batch("catalog", batch, [("mongodb", stores.mongo.write_catalog),
                                                  ("redis", _forget_cached)])
