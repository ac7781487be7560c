"""Rating projections: what PostgreSQL's totals and the rating tables are
copied into, by one service that owns everything waiting to be copied.

The ratings agent (``agents/ratings.py``) writes each batch to PostgreSQL
(rows and exact totals, one transaction) and counts it in the windowed
tables (``tables/ratings.py``); then it hands this service the totals and
window counts the batch changed.  The catalog agent hands it the genres a
catalog batch wrote.  The service, on its own timers:

* mirrors the leaderboards into Redis (``flush_boards``, every
  ``MIRROR_INTERVAL_S``): all-time, best-rated and genre boards from the
  totals, window boards from the tables; absolute scores (``ZADD``), so a
  board can be rebuilt from PostgreSQL and the tables at any time;
* writes the rating aggregate on each title's MongoDB document
  (``flush_aggregates``, every ``TITLE_AGGREGATE_INTERVAL_S``): popular
  titles change in almost every batch, and a document update costs far more
  on MongoDB/FerretDB than a row on PostgreSQL.

A flush that fails puts back what it took (``_put_back``: a newer value that
arrived meanwhile wins), and the next tick tries again; nothing is lost.

After every assignment of the rating table's partitions (the first one at
start and each rebalance), both flushes first copy every title this worker
now owns from PostgreSQL: the previous owner may have died between counting
and flushing.  Both projections are idempotent (absolute ``ZADD``/``$set``).
"""
from __future__ import annotations

import logging
import time
from typing import Dict, Iterable, List, Mapping, MutableMapping, Set, Tuple

from mode import Service

from tables.ratings import (
    HOPPING,
    PANE,
    TUMBLING,
    WindowCounts,
    pane_counts,
    pane_starts,
    rating_counts,
    tumbling_count,
    window_start,
)

from .app import app, know_partitions
from .config import settings
from .stores import stores
from .stores.base import describe_error
from .topics import ratings_topic

log = logging.getLogger(__name__)

#: A title's all-time (votes, score_sum), as PostgreSQL keeps them.
Totals = Dict[str, Tuple[int, int]]


def _put_back(pending: MutableMapping, taken: Mapping) -> None:
    """Return what a failed flush took, unless a newer value arrived meanwhile."""
    for key, value in taken.items():
        pending.setdefault(key, value)


def leaderboard_scores(totals: Totals, genres: Mapping[str, List[str]]
                       ) -> Dict[str, Dict[str, float]]:
    """Absolute all-time, best-rated and genre scores for these titles."""
    keys = stores.redis.keys
    scores: Dict[str, Dict[str, float]] = {keys.rated_all: {}, keys.best_rated: {}}
    for movie, (votes, score_sum) in totals.items():
        if not votes:
            continue
        scores[keys.rated_all][movie] = votes
        if votes >= settings.min_votes:
            scores[keys.best_rated][movie] = round(score_sum / votes, 4)
        for genre in genres.get(movie, []):
            scores.setdefault(keys.genre(genre), {})[movie] = votes
    return scores


def window_scores(movie_ids: Iterable[str], now: float) -> Dict[str, Dict[str, int]]:
    """Current tumbling window and hour's panes of these titles, read from the tables."""
    keys = stores.redis.keys
    t_start = window_start(now, settings.tumbling_window_s, settings.tumbling_window_s)
    scores: Dict[str, Dict[str, int]] = {}
    for movie in movie_ids:
        scores.setdefault(keys.window(TUMBLING, t_start), {})[movie] = tumbling_count(movie, now)
        for start, count in pane_counts(movie, now).items():
            scores.setdefault(keys.window(PANE, start), {})[movie] = count
    return scores


async def owned_totals() -> Totals:
    """Totals of every rated title whose ratings partition this worker owns."""
    topic = ratings_topic.get_topic_name()
    mine = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}
    await know_partitions(app, topic)
    return {movie: value for movie, value in (await stores.postgres.title_totals()).items()
            if app.producer.key_partition(topic, movie.encode()).partition in mine}


class RatingProjections(Service):
    """Pending totals, window counts, genres and dirty titles, flushed on timers."""

    def __post_init__(self) -> None:
        #: MongoDB aggregates waiting for the next flush: movie -> (votes, score_sum).
        self.aggregates: Totals = {}
        #: Values just counted, waiting for the next board mirror: all-time
        #: totals per title, and window counts per board key and title.  The
        #: mirror copies them as they are, without reading again.
        self.totals: Totals = {}
        self.windows: Dict[str, Dict[str, int]] = {}
        #: Titles whose boards must be rebuilt from PostgreSQL and the tables
        #: (after a catalog edit that may have changed their genres) ...
        self.dirty: Set[str] = set()
        #: ... or every owned title, after an assignment (one flag per flush).
        self.rebuild_owned = False
        self.resync_aggregates = False
        #: Genres per title, loaded from the catalog once per title, and the
        #: genres a title had before edits since the last mirror (to take it
        #: off the boards of genres it left).
        self.genres: Dict[str, List[str]] = {}
        self.former_genres: Dict[str, Set[str]] = {}
        #: Start of the hopping window whose board was last rebuilt from its panes.
        self.hour_built = 0.0

    # What the agents hand over ------------------------------------------------

    def note_totals(self, totals: Totals) -> None:
        """PostgreSQL's exact totals of the titles a ratings batch changed."""
        self.aggregates.update(totals)
        self.totals.update(totals)

    def note_windows(self, windows: WindowCounts) -> None:
        """The window counts a ratings batch changed in the tables."""
        keys = stores.redis.keys
        for (label, start), members in windows.items():
            self.windows.setdefault(keys.window(label, start), {}).update(members)

    def learn_genres(self, genres: Mapping[str, List[str]]) -> None:
        """Titles' genres as a catalog batch just wrote them to MongoDB.

        The catalog agent owns the same partitions as this worker's ratings
        (both topics are keyed by ``movie_id``), so it tells the mirror
        directly instead of the mirror asking MongoDB again.  A title whose
        genres changed is re-mirrored: onto its new genre boards, off the ones
        it left.
        """
        for movie, now in genres.items():
            former = self.genres.get(movie)
            self.genres[movie] = list(now)
            if former is not None and set(former) != set(now):
                self.former_genres.setdefault(movie, set()).update(former)
                self.dirty.add(movie)

    def assigned(self) -> None:
        """Partitions were (re)assigned: both flushes copy every owned title next."""
        self.rebuild_owned = True
        self.resync_aggregates = True

    # MongoDB ----------------------------------------------------------------

    @Service.timer(settings.title_aggregate_interval_s)
    async def _aggregates_timer(self) -> None:
        await self.flush_aggregates()

    async def flush_aggregates(self) -> int:
        """Write the pending totals to MongoDB; on failure keep them for the next tick."""
        if self.resync_aggregates:
            try:
                _put_back(self.aggregates, await owned_totals())  # a newer value may be pending
                self.resync_aggregates = False
            except Exception as exc:  # PostgreSQL or Kafka metadata not there yet
                log.warning("title aggregates resync deferred: %s: %s", type(exc).__name__, exc)
        if not self.aggregates:
            return 0
        totals, self.aggregates = self.aggregates, {}
        try:
            written = await stores.mongo.write_rating_totals(totals)
            await stores.redis.forget_titles(totals)  # cached titles carry the aggregate
            return written
        except Exception as exc:
            _put_back(self.aggregates, totals)
            log.warning("title aggregates deferred: %s", describe_error(exc))
            return 0

    # Redis ------------------------------------------------------------------

    @Service.timer(settings.mirror_interval_s)
    async def _boards_timer(self) -> None:
        await self.flush_boards()

    async def flush_boards(self) -> None:
        """Copy changed counts into Redis sorted sets (absolute, idempotent ZADDs).

        Totals and window counts come as the agent handed them over; the
        hopping window's board is the union of its panes' boards
        (``ZUNIONSTORE`` in Redis), rebuilt when a pane changed or the window
        moved.
        """
        now = time.time()
        hour_start = window_start(now, settings.hopping_window_s, settings.hopping_step_s)
        if (not (self.totals or self.windows or self.dirty or self.rebuild_owned)
                and self.hour_built == hour_start):
            return
        totals, windows, rebuilt = self.totals, self.windows, sorted(self.dirty)
        rebuild_owned = self.rebuild_owned
        self.totals, self.windows, self.dirty, self.rebuild_owned = {}, {}, set(), False
        try:
            await self._mirror(totals, windows, rebuilt, rebuild_owned, now, hour_start)
        except Exception as exc:  # the next tick tries again; nothing is lost
            _put_back(self.totals, totals)
            for key, members in windows.items():
                _put_back(self.windows.setdefault(key, {}), members)
            self.dirty.update(rebuilt)
            self.rebuild_owned = self.rebuild_owned or rebuild_owned
            log.warning("leaderboard mirror deferred: %s: %s", type(exc).__name__, exc)

    async def _mirror(self, totals: Totals, windows: Dict[str, Dict[str, int]],
                      rebuilt: List[str], rebuild_owned: bool, now: float,
                      hour_start: float) -> None:
        """One mirror; ``totals``, ``windows`` and ``rebuilt`` grow with what it read."""
        keys = stores.redis.keys
        owned = await owned_totals() if rebuild_owned else {}
        totals.update(owned)
        dirty = [movie for movie in rebuilt if movie not in owned]
        if dirty:
            totals.update(await stores.postgres.title_totals(dirty))
        rebuilt[:] = sorted(set(rebuilt).union(owned))
        for key, members in window_scores(rebuilt, now).items():
            windows[key] = {**members, **windows.get(key, {})}
        genres = await self._genres_of(sorted(totals))
        scores: Dict[str, Dict[str, float]] = leaderboard_scores(totals, genres)
        scores.update({key: {m: n for m, n in members.items() if n}
                       for key, members in windows.items()})
        expire = {key: settings.window_expires_s for key in windows}
        left: Dict[str, List[str]] = {}
        for movie in rebuilt:
            for genre in self.former_genres.get(movie, set()) - set(genres.get(movie, [])):
                left.setdefault(keys.genre(genre), []).append(movie)
        hour_key = keys.window(HOPPING, hour_start)
        pane_keys = [keys.window(PANE, start) for start in pane_starts(now)]
        union = {}
        if self.hour_built != hour_start or not windows.keys().isdisjoint(pane_keys):
            union = {hour_key: pane_keys}
            expire[hour_key] = settings.window_expires_s
        await stores.redis.mirror(scores, expire, remove=left, unions=union)
        self.hour_built = hour_start
        for movie in rebuilt:
            self.former_genres.pop(movie, None)

    async def _genres_of(self, movie_ids: List[str]) -> Dict[str, List[str]]:
        missing = [m for m in movie_ids if m not in self.genres]
        if missing:
            found = await stores.mongo.genres_of(missing)
            for m in missing:
                # A title not in the catalog yet has none; its catalog event
                # brings them (``learn_genres``), and wins over this answer if
                # it came while we were asking.
                self.genres.setdefault(m, found.get(m, []))
        return {m: self.genres[m] for m in movie_ids}


#: The worker's one instance, started with the app (after table recovery).
projections = RatingProjections()
# Faust starts an instance as it is (App._prepare_subservice); its hint names classes only.
app.service(projections)  # type: ignore[arg-type]


@rating_counts.table.on_recover
async def _copy_owned_titles_after_assignment() -> None:
    """After every assignment: a worker that died or stopped between a batch
    and its flushes took those titles' pending projections with it, and the
    new owner of their partition copies them again from PostgreSQL."""
    projections.assigned()
