"""Rating counts per title in windows: a tumbling minute and a hopping hour.

The tables are keyed by ``movie_id``, like the ratings topic, so each worker
counts the titles of the partitions it owns.  Windows follow event time: the
Kafka record timestamp, which producers set to ``occurred_at`` (see
docs/events.md).  Every table is backed by a changelog topic and, in the
worker, by RocksDB; a restarted worker recovers them from both.  All-time
totals are not counted here: PostgreSQL keeps them exact, in the same
transaction as the ratings (``stores.postgres.write_ratings``).  This module
holds the table and the window maths only; what is copied from it into Redis
is ``streamapp/projections.py``'s.

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
with absolute scores (``streamapp.projections``), so Redis can be rebuilt
from them at any time.
"""
from __future__ import annotations

import logging
import time
import weakref
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Set, Tuple

from faust.streams import _current_event

from streamapp.app import app
from streamapp.config import settings
from tables.expiry import windowed_table

log = logging.getLogger(__name__)

TUMBLING = "1m" if settings.tumbling_window_s == 60 else f"{settings.tumbling_window_s}s"
HOPPING = "1h" if settings.hopping_window_s == 3600 else f"{settings.hopping_window_s}s"
PANE = "5m" if settings.hopping_step_s == 300 else f"{settings.hopping_step_s}s"
if settings.hopping_step_s % settings.tumbling_window_s:
    raise ValueError("HOPPING_STEP_S must be a multiple of TUMBLING_WINDOW_S: "
                     "each pane counts the whole minutes inside it")
#: Panes are kept for as long as the hour they add up to, plus the grace for
#: late ratings.  The table keeps an in-memory note per (title, pane) until
#: the pane expires (``tables.expiry``), so expiry bounds that memory.
_pane_expires = timedelta(seconds=settings.hopping_window_s + 2 * settings.hopping_step_s
                          + settings.late_grace_s)

#: Source of a rating record: (partition, offset).
Source = Tuple[int, int]


def _no_ratings() -> list:
    """A pane's value: [ratings, {minute start: ratings}, {partition: last offset counted}]."""
    return [0, {}, {}]


rating_counts = windowed_table(
    app, "rating-counts", default=_no_ratings, key_type=str,
    partitions=settings.topic_partitions, options=settings.rocksdb_table_options(),
    # The changelog drops what is older than the pane expiry, a segment at a
    # time (``tables.expiry``): segments of two panes keep that bounded.
    extra_topic_configs={"segment.ms": str(2 * settings.hopping_step_s * 1000)},
    help="Ratings per title in hop-sized panes, and per minute within each pane; "
         "a hopping window is a sum of panes.",
).tumbling(settings.hopping_step_s, expires=_pane_expires).relative_to_stream()



def _while_the_changelog_is_created(table: Any) -> None:
    """Let a table write while its changelog topic is still being created.

    Faust checks once that a table's source topic and changelog have as many
    partitions, and takes a changelog its consumer's metadata lists with 0
    partitions (just created by another worker of a new deployment) for a
    mismatch: ``PartitionsMismatch`` stopped one of two workers starting
    together (``make bench-scaling``).  0 means "not known yet" here: the
    check is skipped until the metadata lists the partitions, then made.
    """
    verify = table._verify_source_topic_partitions

    def check(source_topic: str) -> None:
        if table.app.consumer.topic_partitions(table.changelog_topic_name) == 0:
            return
        verify(source_topic)

    table._verify_source_topic_partitions = check


_while_the_changelog_is_created(rating_counts.table)

#: Window counts a batch changed: (window label, window start) -> {title: count}.
WindowCounts = Dict[Tuple[str, float], Dict[str, int]]


class Counted(NamedTuple):
    """What ``count_ratings`` did: ratings too late for their minute, and the
    new counts of the windows it changed (for the leaderboards)."""

    late: int
    windows: WindowCounts


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
                  canonical: Optional[Mapping[str, Optional[Source]]] = None) -> Counted:
    """Count accepted (raw event, rating) pairs.

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
    windows: WindowCounts = {}
    for (movie, start), change in changes.items():
        if change.raw is not None:
            with _counting(change.raw):
                rating_counts[movie] = change.result()
            windows.setdefault((PANE, start), {})[movie] = change.count
            for minute in change.touched:
                windows.setdefault((TUMBLING, float(minute)), {})[movie] = change.minutes[minute]
    return Counted(late, windows)


def _change_for(changes: Dict, movie: str, raw, at: float) -> _Change:
    key = (movie, at - at % settings.hopping_step_s)
    change = changes.get(key)
    if change is None:
        with _counting(raw):
            change = changes[key] = _Change(rating_counts[movie].current())
    return change


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


def pane_starts(now: float) -> List[float]:
    """Starts of the panes that make up the hopping window shown now."""
    step = settings.hopping_step_s
    start = window_start(now, settings.hopping_window_s, step)
    return [start + i * step for i in range(settings.hopping_window_s // step)]


def pane_counts(movie: str, now: float) -> Dict[float, int]:
    """Ratings of a title in each pane of the hopping window shown now, by pane start."""
    window = rating_counts.table.window
    assert window is not None  # a windowed table
    panes = rating_counts[movie]
    return {start: int(panes[window.ranges(start)[0]][0]) for start in pane_starts(now)}


def hopping_count(movie: str, now: float) -> int:
    """Ratings of a title in the hopping window shown now: the sum of its panes."""
    return sum(pane_counts(movie, now).values())
