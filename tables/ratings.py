"""Rating counts per title: a tumbling window, a hopping window, all time.

The tables are keyed by ``movie_id``, like the ratings topic, so each worker
counts the titles of the partitions it owns.  Windows follow event time: the
Kafka record timestamp, which producers set to ``occurred_at`` (see
docs/events.md).  Every table is backed by a changelog topic and, in the
worker, by RocksDB; a restarted worker recovers them from both.

Late ratings: a rating whose every window has already closed (window end plus
``LATE_GRACE_S`` is in the past) is counted in the all-time tables only,
never in a closed window, so a published window does not change afterwards.

Leaderboards in Redis are mirrored from these tables with absolute scores,
so Redis can be rebuilt from Kafka alone.
"""
from __future__ import annotations

import logging
import operator
import time
import weakref
from contextlib import contextmanager
from datetime import timedelta
from typing import Dict, Iterable, List, Set, Tuple

from faust.streams import _current_event

from streamapp.app import app
from streamapp.config import settings
from streamapp.stores import redis as redis_keys
from streamapp.stores import stores

log = logging.getLogger(__name__)

TUMBLING = "1m" if settings.tumbling_window_s == 60 else f"{settings.tumbling_window_s}s"
HOPPING = "1h" if settings.hopping_window_s == 3600 else f"{settings.hopping_window_s}s"
_expires = timedelta(seconds=settings.window_expires_s)

rating_counts_tumbling = app.Table(
    "rating-counts-tumbling", default=int, key_type=str, value_type=int,
    partitions=settings.topic_partitions,
    help="Ratings per title in tumbling windows.",
).tumbling(settings.tumbling_window_s, expires=_expires).relative_to_stream()

rating_counts_hopping = app.Table(
    "rating-counts-hopping", default=int, key_type=str, value_type=int,
    partitions=settings.topic_partitions,
    help="Ratings per title in hopping windows.",
).hopping(settings.hopping_window_s, settings.hopping_step_s,
          expires=_expires).relative_to_stream()

#: Ratings already counted, by event id.  Kafka can hold the same rating twice
#: (a producer retry, a replayed stream); this makes the counts per event, not
#: per record.  Written in the partition of the rating's title, so the worker
#: that counts a title also holds its ids.
rating_seen = app.Table("rating-seen", default=int, key_type=str, value_type=int,
                        partitions=settings.topic_partitions,
                        help="Rating event ids already counted.")

rating_votes = app.Table("rating-votes", default=int, key_type=str, value_type=int,
                         partitions=settings.topic_partitions,
                         help="Ratings per title, all time.")
rating_score_sum = app.Table("rating-score-sum", default=int, key_type=str, value_type=int,
                             partitions=settings.topic_partitions,
                             help="Sum of scores per title, all time.")

#: Titles whose counts changed since the last mirror into Redis.
_dirty: Set[str] = set()
#: Genres per title, loaded from the catalog once per title.
_genres: Dict[str, List[str]] = {}


def is_late(event_time: float, size: float, step: float, now: float) -> bool:
    """True when the newest window containing ``event_time`` has closed."""
    newest_start = event_time - (event_time % step)
    return newest_start + size + settings.late_grace_s < now


@contextmanager
def _counting(raw):
    """Make ``raw`` Faust's current event while we update tables for it.

    Tables write each change to the changelog partition of the current event;
    in a batch (``take_events``) that context is gone, so we set it per event.
    """
    token = _current_event.set(weakref.ref(raw))
    try:
        yield
    finally:
        _current_event.reset(token)


def count_ratings(accepted: Iterable[Tuple[object, object]]) -> int:
    """Count accepted (raw event, rating) pairs; returns how many were late."""
    now = time.time()
    late = 0
    for raw, rating in accepted:
        with _counting(raw):
            late += _count_one(raw, rating, now)
    return late


def _count_one(raw, rating, now: float) -> int:
    """Count one rating; returns 1 when it was too late for the tumbling window."""
    if rating_seen[rating.event_id]:
        return 0
    rating_seen[rating.event_id] = 1
    movie = rating.movie_id
    at = raw.message.timestamp
    rating_votes[movie] += 1
    rating_score_sum[movie] += rating.score
    _dirty.add(movie)
    if not is_late(at, settings.hopping_window_s, settings.hopping_step_s, now):
        rating_counts_hopping[movie].apply(operator.add, 1, event=raw)
    if is_late(at, settings.tumbling_window_s, settings.tumbling_window_s, now):
        return 1
    rating_counts_tumbling[movie].apply(operator.add, 1, event=raw)
    return 0


def window_start(now: float, size: float, step: float) -> float:
    """Start of the oldest window (of this size and step) that contains ``now``.

    That is the window Faust's ``.now()`` reads; for a tumbling window
    (size == step) it is the only one.
    """
    return now - (now % step) - size + step


@rating_votes.on_recover
async def _mirror_everything_after_recovery() -> None:
    _dirty.update(rating_votes.keys())


#: Genres a title had before a catalog edit, to take it off boards it left.
_former_genres: Dict[str, List[str]] = {}


def forget_genres(movie_ids: Iterable[str]) -> None:
    """A catalog edit may change a title's genres: load them again, re-mirror."""
    for movie in movie_ids:
        former = _genres.pop(movie, None)
        if former:
            _former_genres[movie] = former
            _dirty.add(movie)


async def _genres_of(movie_ids: List[str]) -> Dict[str, List[str]]:
    missing = [m for m in movie_ids if m not in _genres]
    if missing:
        found = await stores.mongo.genres_of(missing)
        for m in missing:
            if found.get(m):  # titles not in the catalog yet are asked again next time
                _genres[m] = found[m]
    return {m: _genres.get(m, []) for m in movie_ids}


def leaderboard_scores(movie_ids: List[str], genres: Dict[str, List[str]],
                       now: float) -> Tuple[Dict[str, Dict[str, float]], Dict[str, int]]:
    """Absolute leaderboard scores for these titles, from the tables."""
    t_key = redis_keys.window_key(TUMBLING, window_start(now, settings.tumbling_window_s,
                                                         settings.tumbling_window_s))
    h_key = redis_keys.window_key(HOPPING, window_start(now, settings.hopping_window_s,
                                                        settings.hopping_step_s))
    scores: Dict[str, Dict[str, float]] = {redis_keys.RATED_ALL: {}, redis_keys.BEST_RATED: {},
                                           t_key: {}, h_key: {}}
    for movie in movie_ids:
        votes = rating_votes[movie]
        if not votes:
            continue
        scores[redis_keys.RATED_ALL][movie] = votes
        if votes >= settings.min_votes:
            scores[redis_keys.BEST_RATED][movie] = round(rating_score_sum[movie] / votes, 4)
        in_window = rating_counts_tumbling[movie].now()
        if in_window:
            scores[t_key][movie] = in_window
        in_hop = rating_counts_hopping[movie].now()
        if in_hop:
            scores[h_key][movie] = in_hop
        for genre in genres.get(movie, []):
            scores.setdefault(redis_keys.genre_key(genre), {})[movie] = votes
    expire = {t_key: settings.window_expires_s, h_key: settings.window_expires_s}
    return scores, expire


@app.timer(interval=settings.mirror_interval_s)
async def mirror_leaderboards() -> None:
    """Copy changed titles' counts into Redis sorted sets (idempotent ZADDs)."""
    if not _dirty:
        return
    movie_ids = sorted(_dirty)
    _dirty.clear()
    try:
        genres = await _genres_of(movie_ids)
        scores, expire = leaderboard_scores(movie_ids, genres, time.time())
        left: Dict[str, List[str]] = {}
        for movie in movie_ids:
            for genre in set(_former_genres.get(movie, [])) - set(genres.get(movie, [])):
                left.setdefault(redis_keys.genre_key(genre), []).append(movie)
        await stores.redis.mirror(scores, expire, remove=left)
        for movie in movie_ids:
            _former_genres.pop(movie, None)
    except Exception as exc:  # the next tick tries again; nothing is lost
        _dirty.update(movie_ids)
        log.warning("leaderboard mirror deferred: %s: %s", type(exc).__name__, exc)
