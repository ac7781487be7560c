"""A Faust table whose window-expiry bookkeeping is bounded by its windows.

A windowed ``faust.Table`` remembers, per partition, which window ends it
must expire: a heap of window ends and, per end, the set of keys to drop.
faust-streaming 0.15.3 pushes the window's end onto the heap on *every*
write, so the heap holds one float per write until that window expires
(here more than an hour), however few windows there are: the worker's
memory grew with the number of ratings counted (bench/README.md, "Soak").
This table pushes each window end once, when the first key of that window
is written, which is all ``_del_old_keys`` needs: it pops an end and drops
every key noted under it.  The heap then holds one entry per live window
per partition, and the key sets one entry per (key, live window).

Its changelog topic is created with ``cleanup.policy=compact,delete``: Faust
gives a windowed table's changelog a retention of the window expiry but only
compaction, and expiring a window drops its keys from the local store
without a tombstone, so a compacted-only changelog kept one record per key
and window forever.  With ``delete`` the broker drops segments older than
the expiry (it only drops whole segments: give the table a ``segment.ms``).
"""
from __future__ import annotations

from heapq import heappush
from typing import Any

import faust


class WindowedTable(faust.Table):
    """``faust.Table`` with one expiry-heap entry per (partition, window end)."""

    _changelog_deleting = True

    def _maybe_set_key_ttl(self, key: Any, partition: int) -> None:
        if not self._should_expire_keys():
            return
        _, (_, range_end) = key
        noted = (partition, range_end)
        if noted not in self._partition_timestamp_keys:
            heappush(self._partition_timestamps[partition], range_end)
        if range_end > self._partition_latest_timestamp[partition]:
            self._partition_latest_timestamp[partition] = range_end
        self._partition_timestamp_keys[noted].add(key)


def windowed_table(app: faust.App, name: str, **kwargs: Any) -> WindowedTable:
    """``app.Table(name, **kwargs)``, as a ``WindowedTable``."""
    table = WindowedTable(app, name=name, beacon=app.tables.beacon, **kwargs)
    app.tables.add(table)
    return table
