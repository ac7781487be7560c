"""Ratings → PostgreSQL (durable rows + exact totals), the rating tables
(windowed counts), a Redis event count, the leaderboards (mirrored from the
totals and the tables), and the aggregate on each title's MongoDB document.

The MongoDB aggregate is a projection of PostgreSQL's exact totals, so it is
not written per batch: titles whose totals changed are collected and written
every ``TITLE_AGGREGATE_INTERVAL_S`` (popular titles change in almost every batch, and a document
update costs far more on MongoDB/FerretDB than a row on PostgreSQL).  If a
worker dies or stops before a flush, whoever owns those titles' partitions
next copies their totals again after its assignment; the projection is
idempotent either way (absolute ``$set``).
"""
import logging
from typing import Dict, Optional, Tuple

from streamapp.app import app
from streamapp.config import settings
from streamapp.pipeline import handle_batch, stop_before_commit, timed
from streamapp.stores import stores
from streamapp.stores.base import describe_error
from streamapp.topics import ratings_topic
from tables.ratings import count_ratings, note_totals, owned_totals, rating_counts

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


#: Set after an assignment: the next flush first adds every owned title's totals.
_resync_owned = False


async def flush_title_aggregates() -> int:
    """Write the pending totals to MongoDB; on failure keep them for the next tick."""
    global _resync_owned
    if _resync_owned:
        try:
            for movie, value in (await owned_totals()).items():
                _pending_totals.setdefault(movie, value)  # a newer value may be pending
            _resync_owned = False
        except Exception as exc:  # PostgreSQL or Kafka metadata not there yet
            log.warning("title aggregates resync deferred: %s: %s", type(exc).__name__, exc)
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


@rating_counts.table.on_recover
async def resync_owned_aggregates() -> None:
    """Copy the totals of every title this worker now owns at the next flush.

    After every assignment (the first one at start, and each rebalance): a
    worker that died or stopped between a batch and its flush took those
    titles' pending aggregates with it, and the new owner of their partition
    is the one to copy them again from PostgreSQL (idempotent ``$set``).
    """
    global _resync_owned
    _resync_owned = True
