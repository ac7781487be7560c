"""Rating counts per title in windows: a tumbling minute and a hopping hour.

The tables are keyed by ``movie_id``, like the ratings topic, so each worker
counts the titles of the partitions it owns.  Windows follow event time: the
Kafka record timestamp, which producers set to ``occurred_at`` (see
docs/events.md).  Every table is backed by a changelog topic and, in the
worker, by RocksDB; a restarted worker recovers them from both.  All-time
totals are not counted here: PostgreSQL keeps them exact, in the same
transaction as the ratings (``stores.postgres.write_ratings``), and the
ratings agent hands each batch's totals to ``note_totals`` for the boards.

Exactly once per rating, under at-least-once delivery:

* every value carries, next to its count, the offset of the last rating it
  counted, per source partition.  A value and its mark travel in the same
  changelog record, so after a crash a replayed rating is either in the
  recovered count (and at or below its mark, skipped) or in neither;
* a rating Kafka holds twice (a producer retry, a replayed stream) counts
  only at the offset PostgreSQL stored it from first (``ratings.src_*``),
  which the ratings agent hands over as ``canonical``.

Cheap: one table holds both windows.  The hopping hour (1 h, every 5 min)
is not a Faust hopping table, which would write all 12 overlapping windows
per rating; it is read as the sum of the 12 five-minute tumbling panes it
spans ("pane" aggregation).  Each pane's value also carries the counts of
the minutes inside it, which is the tumbling minute.  A batch changes each
(title, pane) once, so it costs one changelog record per title, not one per
rating and window; one table instead of two (minute and pane) saved about a
fifth of the worker's CPU an event (bench/README.md, "Rating tables").

Late ratings: a rating whose every window has already closed (window end plus
``LATE_GRACE_S`` is in the past) is counted in the all-time totals only,
never in a closed window, so a published window does not change afterwards.

Leaderboards in Redis are mirrored from these tables and PostgreSQL's totals
with absolute scores, so Redis can be rebuilt from them at any time.
"""
from __future__ import annotations

import logging
import time
import weakref
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from faust.streams import _current_event

from streamapp.app import app, know_partitions
from streamapp.config import settings
from streamapp.stores import stores
from streamapp.topics import ratings_topic

log = logging.getLogger(__name__)

TUMBLING = "1m" if settings.tumbling_window_s == 60 else f"{settings.tumbling_window_s}s"
HOPPING = "1h" if settings.hopping_window_s == 3600 else f"{settings.hopping_window_s}s"
PANE = "5m" if settings.hopping_step_s == 300 else f"{settings.hopping_step_s}s"
if settings.hopping_step_s % settings.tumbling_window_s:
    raise ValueError("HOPPING_STEP_S must be a multiple of TUMBLING_WINDOW_S: "
                     "each pane counts the whole minutes inside it")
#: Panes are kept for as long as the hour they add up to, plus the grace for
#: late ratings.  Faust keeps an in-memory note per windowed write until its
#: window expires, so expiry is what bounds the worker's memory.
_pane_expires = timedelta(seconds=settings.hopping_window_s + 2 * settings.hopping_step_s
                          + settings.late_grace_s)
#: RocksDB per table partition (see ``Settings.rocksdb_write_buffer_kb``).
_rocksdb = {"write_buffer_size": settings.rocksdb_write_buffer_kb * 2**10,
            "max_write_buffer_number": 2,
            "block_cache_size": settings.rocksdb_block_cache_mb * 2**20}

#: Source of a rating record: (partition, offset).
Source = Tuple[int, int]


def _no_ratings() -> list:
    """A pane's value: [ratings, {minute start: ratings}, {partition: last offset counted}]."""
    return [0, {}, {}]


rating_counts = app.Table(
    "rating-counts", default=_no_ratings, key_type=str,
    partitions=settings.topic_partitions, options=dict(_rocksdb),
    help="Ratings per title in hop-sized panes, and per minute within each pane; "
         "a hopping window is a sum of panes.",
).tumbling(settings.hopping_step_s, expires=_pane_expires).relative_to_stream()

#: Values just counted, waiting for the next mirror into Redis: all-time
#: totals per title (PostgreSQL's), and window counts per board key and
#: title.  The mirror copies them as they are, without reading again.
_fresh_totals: Dict[str, Tuple[int, int]] = {}
_fresh_windows: Dict[str, Dict[str, int]] = {}
#: Titles whose boards must be rebuilt from PostgreSQL and the tables (after
#: a catalog edit that may have changed their genres) ...
_dirty: Set[str] = set()
#: ... or every title of this worker's partitions (after a recovery: the
#: previous owner may have died between counting and mirroring).
_rebuild_owned: List[bool] = [False]
#: Genres per title, loaded from the catalog once per title.
_genres: Dict[str, List[str]] = {}


def is_late(event_time: float, size: float, step: float, now: float) -> bool:
    """True when the newest window containing ``event_time`` has closed."""
    newest_start = event_time - (event_time % step)
    return newest_start + size + settings.late_grace_s < now


@contextmanager
def _counting(raw):
    """Make ``raw`` Faust's current event while we update tables for it.

    Tables write each change to the changelog partition of the current event
    and windowed tables take its timestamp; in a batch (``take_events``) that
    context is gone, so we set it.
    """
    token = _current_event.set(weakref.ref(raw))
    try:
        yield
    finally:
        _current_event.reset(token)


class _Change:
    """One pane value being updated by a batch: read once, written once."""

    __slots__ = ("count", "minutes", "marks", "touched", "raw")

    def __init__(self, value: list) -> None:
        count, minutes, marks = value
        self.count = count
        self.minutes = dict(minutes)
        self.marks = dict(marks)
        self.touched: Set[str] = set()
        self.raw = None

    def take(self, raw) -> bool:
        """Claim ``raw`` for this value; False when it was counted before."""
        message = raw.message
        partition = str(message.partition)
        if message.offset <= self.marks.get(partition, -1):
            return False
        self.marks[partition] = message.offset
        self.raw = raw
        return True

    def add_minute(self, minute: str) -> None:
        self.minutes[minute] = self.minutes.get(minute, 0) + 1
        self.touched.add(minute)

    def result(self) -> list:
        return [self.count, self.minutes, self.marks]


def _minute_of(at: float) -> str:
    """The key of the tumbling minute holding ``at`` in a pane's value."""
    size = settings.tumbling_window_s
    return str(int(at // size) * size)


def count_ratings(accepted: Iterable[Tuple[Any, Any]],
                  canonical: Optional[Mapping[str, Optional[Source]]] = None) -> int:
    """Count accepted (raw event, rating) pairs; returns how many were late.

    ``canonical`` maps event ids to the source PostgreSQL first stored them
    from; a rating read from anywhere else is a copy and is not counted.
    """
    canonical = canonical or {}
    now = time.time()
    late = 0
    changes: Dict[Tuple[str, float], _Change] = {}
    for raw, rating in accepted:
        message = raw.message
        source = canonical.get(rating.event_id)
        if source is not None and source != (message.partition, message.offset):
            continue
        at = message.timestamp
        minute_late = is_late(at, settings.tumbling_window_s, settings.tumbling_window_s, now)
        late += minute_late
        # A pane outlives its minutes: a rating too late for its pane is too
        # late for its minute as well.
        if is_late(at, settings.hopping_window_s, settings.hopping_step_s, now):
            continue
        change = _change_for(changes, rating.movie_id, raw, at)
        if change.take(raw):
            change.count += 1
            if not minute_late:
                change.add_minute(_minute_of(at))
    for (movie, start), change in changes.items():
        if change.raw is not None:
            with _counting(change.raw):
                rating_counts[movie] = change.result()
            _fresh_windows.setdefault(stores.redis.keys.window(PANE, start), {})[movie] = \
                change.count
            for minute in change.touched:
                _fresh_windows.setdefault(stores.redis.keys.window(TUMBLING, float(minute)), {})[
                    movie] = change.minutes[minute]
    return late


def _change_for(changes: Dict, movie: str, raw, at: float) -> _Change:
    key = (movie, at - at % settings.hopping_step_s)
    change = changes.get(key)
    if change is None:
        with _counting(raw):
            change = changes[key] = _Change(rating_counts[movie].current())
    return change


def note_totals(totals: Mapping[str, Tuple[int, int]]) -> None:
    """PostgreSQL's exact (votes, score_sum) of titles a batch changed, for the boards."""
    _fresh_totals.update(totals)


def window_start(now: float, size: float, step: float) -> float:
    """Start of the oldest window (of this size and step) that contains ``now``.

    That is the window a leaderboard shows; for a tumbling window
    (size == step) it is the only one.
    """
    return now - (now % step) - size + step


def tumbling_count(movie: str, now: Optional[float] = None) -> int:
    """Ratings of a title in the current tumbling minute (kept in its pane's value)."""
    now = time.time() if now is None else now
    window = rating_counts.table.window
    assert window is not None  # a windowed table
    pane = rating_counts[movie][window.ranges(now)[-1]]
    return int(pane[1].get(_minute_of(now), 0))


def _pane_starts(now: float) -> List[float]:
    """Starts of the panes that make up the hopping window shown now."""
    step = settings.hopping_step_s
    start = window_start(now, settings.hopping_window_s, step)
    return [start + i * step for i in range(settings.hopping_window_s // step)]


def pane_counts(movie: str, now: float) -> Dict[float, int]:
    """Ratings of a title in each pane of the hopping window shown now, by pane start."""
    window = rating_counts.table.window
    assert window is not None  # a windowed table
    panes = rating_counts[movie]
    return {start: int(panes[window.ranges(start)[0]][0]) for start in _pane_starts(now)}


def hopping_count(movie: str, now: float) -> int:
    """Ratings of a title in the hopping window shown now: the sum of its panes."""
    return sum(pane_counts(movie, now).values())


@rating_counts.table.on_recover
async def _mirror_everything_after_recovery() -> None:
    _rebuild_owned[0] = True


async def owned_totals() -> Dict[str, Tuple[int, int]]:
    """Totals of every rated title whose ratings partition this worker owns."""
    topic = ratings_topic.get_topic_name()
    mine = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}
    await know_partitions(app, topic)
    return {movie: value for movie, value in (await stores.postgres.title_totals()).items()
            if app.producer.key_partition(topic, movie.encode()).partition in mine}


#: Genres a title had before catalog edits since the last mirror, to take it
#: off the boards of genres it left.
_former_genres: Dict[str, Set[str]] = {}


def learn_genres(genres: Mapping[str, List[str]]) -> None:
    """Titles' genres as a catalog batch just wrote them to MongoDB.

    The catalog agent owns the same partitions as this worker's ratings
    (both topics are keyed by ``movie_id``), so it tells the mirror directly
    instead of the mirror asking MongoDB again.  A title whose genres changed
    is re-mirrored: onto its new genre boards, off the ones it left.
    """
    for movie, now in genres.items():
        former = _genres.get(movie)
        _genres[movie] = list(now)
        if former is not None and set(former) != set(now):
            _former_genres.setdefault(movie, set()).update(former)
            _dirty.add(movie)


async def _genres_of(movie_ids: List[str]) -> Dict[str, List[str]]:
    missing = [m for m in movie_ids if m not in _genres]
    if missing:
        found = await stores.mongo.genres_of(missing)
        for m in missing:
            # A title not in the catalog yet has none; its catalog event
            # brings them (``learn_genres``), and wins over this answer if
            # it came while we were asking.
            _genres.setdefault(m, found.get(m, []))
    return {m: _genres[m] for m in movie_ids}


def leaderboard_scores(totals: Dict[str, Tuple[int, int]], genres: Dict[str, List[str]]
                       ) -> Dict[str, Dict[str, float]]:
    """Absolute all-time, best-rated and genre scores for these titles."""
    scores: Dict[str, Dict[str, float]] = {stores.redis.keys.rated_all: {}, stores.redis.keys.best_rated: {}}
    for movie, (votes, score_sum) in totals.items():
        if not votes:
            continue
        scores[stores.redis.keys.rated_all][movie] = votes
        if votes >= settings.min_votes:
            scores[stores.redis.keys.best_rated][movie] = round(score_sum / votes, 4)
        for genre in genres.get(movie, []):
            scores.setdefault(stores.redis.keys.genre(genre), {})[movie] = votes
    return scores


def window_scores(movie_ids: Iterable[str], now: float) -> Dict[str, Dict[str, int]]:
    """Current tumbling window and hour's panes of these titles, read from the tables."""
    t_start = window_start(now, settings.tumbling_window_s, settings.tumbling_window_s)
    scores: Dict[str, Dict[str, int]] = {}
    for movie in movie_ids:
        scores.setdefault(stores.redis.keys.window(TUMBLING, t_start), {})[movie] = \
            tumbling_count(movie, now)
        for start, count in pane_counts(movie, now).items():
            scores.setdefault(stores.redis.keys.window(PANE, start), {})[movie] = count
    return scores


#: Start of the hopping window whose board was last rebuilt from its panes.
_hour_built: List[float] = [0.0]


@app.timer(interval=settings.mirror_interval_s)
async def mirror_leaderboards() -> None:
    await mirror_boards()


async def mirror_boards() -> None:
    """Copy changed counts into Redis sorted sets (absolute, idempotent ZADDs).

    Totals and window counts come as ``count_ratings`` left them; the hopping
    window's board is the union of its panes' boards (``ZUNIONSTORE`` in
    Redis), rebuilt when a pane changed or the window moved.
    """
    now = time.time()
    hour_start = window_start(now, settings.hopping_window_s, settings.hopping_step_s)
    if (not (_fresh_totals or _fresh_windows or _dirty or _rebuild_owned[0])
            and _hour_built[0] == hour_start):
        return
    totals, windows, rebuilt = dict(_fresh_totals), dict(_fresh_windows), sorted(_dirty)
    rebuild_owned, _rebuild_owned[0] = _rebuild_owned[0], False
    _fresh_totals.clear()
    _fresh_windows.clear()
    _dirty.clear()
    try:
        owned = await owned_totals() if rebuild_owned else {}
        totals.update(owned)
        dirty = [movie for movie in rebuilt if movie not in owned]
        if dirty:
            totals.update(await stores.postgres.title_totals(dirty))
        rebuilt = sorted(set(rebuilt).union(owned))
        for key, members in window_scores(rebuilt, now).items():
            windows[key] = {**members, **windows.get(key, {})}
        genres = await _genres_of(sorted(totals))
        scores: Dict[str, Dict[str, float]] = leaderboard_scores(totals, genres)
        scores.update({key: {m: n for m, n in members.items() if n}
                       for key, members in windows.items()})
        expire = {key: settings.window_expires_s for key in windows}
        left: Dict[str, List[str]] = {}
        for movie in rebuilt:
            for genre in _former_genres.get(movie, set()) - set(genres.get(movie, [])):
                left.setdefault(stores.redis.keys.genre(genre), []).append(movie)
        hour_key = stores.redis.keys.window(HOPPING, hour_start)
        pane_keys = [stores.redis.keys.window(PANE, start) for start in _pane_starts(now)]
        union = {}
        if _hour_built[0] != hour_start or not windows.keys().isdisjoint(pane_keys):
            union = {hour_key: pane_keys}
            expire[hour_key] = settings.window_expires_s
        await stores.redis.mirror(scores, expire, remove=left, unions=union)
        _hour_built[0] = hour_start
        for movie in rebuilt:
            _former_genres.pop(movie, None)
    except Exception as exc:  # the next tick tries again; nothing is lost
        for movie, total in totals.items():
            _fresh_totals.setdefault(movie, total)  # a newer value may have arrived
        for key, members in windows.items():
            for movie, value in members.items():
                _fresh_windows.setdefault(key, {}).setdefault(movie, value)
        _dirty.update(rebuilt)
        _rebuild_owned[0] = _rebuild_owned[0] or rebuild_owned
        log.warning("leaderboard mirror deferred: %s: %s", type(exc).__name__, exc)
