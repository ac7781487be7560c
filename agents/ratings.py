"""Ratings → PostgreSQL (durable rows + exact totals), the rating tables
(windowed counts), a Redis event count, the leaderboards (mirrored from the
totals and the tables), and the aggregate on each title's MongoDB document.

The MongoDB aggregate is a projection of PostgreSQL's exact totals, so it is
not written per batch: titles whose totals changed are collected and written
every ``TITLE_AGGREGATE_INTERVAL_S`` (popular titles change in almost every batch, and a document
update costs far more on MongoDB/FerretDB than a row on PostgreSQL).  If the
worker dies before a flush, the start-up resync copies every title's totals
again; the projection is idempotent either way (absolute ``$set``).
"""
import logging
from typing import Dict, Optional, Tuple

from streamapp.app import app
from streamapp.config import settings
from streamapp.pipeline import handle_batch, stop_before_commit, timed
from streamapp.stores import stores
from streamapp.stores.base import describe_error, retrying
from streamapp.topics import ratings_topic
from tables.ratings import count_ratings, note_totals

log = logging.getLogger(__name__)

#: Titles whose totals changed since the last flush: movie_id -> (votes, score_sum).
_pending_totals: Dict[str, Tuple[int, int]] = {}


async def process(batch) -> None:
    sources: Dict[str, Tuple[int, int]] = {}
    canonical: Dict[str, Optional[Tuple[int, int]]] = {}

    async def to_postgres(events):
        totals, first_read_at = await stores.postgres.write_ratings(events, sources)
        _pending_totals.update(totals)
        note_totals(totals)
        canonical.update(first_read_at)

    accepted = await handle_batch("ratings", batch, [
        ("postgres", to_postgres), ("redis", stores.redis.count_events)], sources=sources)
    with timed("ratings", "tables"):
        count_ratings(accepted, canonical)


@app.agent(ratings_topic)
async def ratings(stream):
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        with stop_before_commit("ratings"):
            await process(batch)


async def flush_title_aggregates() -> int:
    """Write the pending totals to MongoDB; on failure keep them for the next tick."""
    if not _pending_totals:
        return 0
    totals = dict(_pending_totals)
    _pending_totals.clear()
    try:
        written = await stores.mongo.write_rating_totals(totals)
        await stores.redis.forget_titles(totals)  # cached titles carry the aggregate
        return written
    except Exception as exc:
        for movie, value in totals.items():
            _pending_totals.setdefault(movie, value)  # a newer value may have arrived
        log.warning("title aggregates deferred: %s", describe_error(exc))
        return 0


@app.timer(interval=settings.title_aggregate_interval_s)
async def title_aggregates():
    await flush_title_aggregates()


@app.task
async def resync_title_aggregates():
    """Copy every title's totals from PostgreSQL to MongoDB once at start."""
    async def copy_all():
        return await stores.mongo.write_rating_totals(await stores.postgres.title_totals())
    written = await retrying("mongodb", copy_all)
    log.info("resynced rating aggregates of %d titles", written)
