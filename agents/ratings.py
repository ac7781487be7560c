"""Ratings → PostgreSQL (durable rows + exact totals), a Redis event count and
the rating tables (windowed counts); then the totals and window counts the
batch changed go to the rating projections (``streamapp/projections.py``),
which copy them into the Redis leaderboards and the aggregate on each title's
MongoDB document on their own timers.
"""
import logging
from typing import Dict, Optional, Tuple

from streamapp.app import app
from streamapp.config import settings
from streamapp.pipeline import handle_batch, stop_before_commit, timed
from streamapp.projections import projections
from streamapp.stores import stores
from streamapp.topics import ratings_topic
from tables.ratings import count_ratings

log = logging.getLogger(__name__)


async def process(batch) -> None:
    sources: Dict[str, Tuple[int, int]] = {}
    canonical: Dict[str, Optional[Tuple[int, int]]] = {}

    async def to_postgres(events):
        totals, first_read_at = await stores.postgres.write_ratings(events, sources)
        projections.note_totals(totals)
        canonical.update(first_read_at)

    accepted = await handle_batch("ratings", batch, [
        ("postgres", to_postgres), ("redis", stores.redis.count_events)], sources=sources)
    with timed("ratings", "tables"):
        counted = count_ratings(accepted, canonical)
    projections.note_windows(counted.windows)


@app.agent(ratings_topic)
async def ratings(stream):
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        with stop_before_commit("ratings"):
            await process(batch)
