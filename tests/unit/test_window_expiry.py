"""The rating table's expiry bookkeeping is bounded by its windows, not its writes."""
from __future__ import annotations

import asyncio

import faust
import pytest

from tables.expiry import WindowedTable

PANE = 300.0


def _table(cls: type, expires: float = 60.0):
    app = faust.App(f"expiry-{cls.__name__}", store="memory://", autodiscover=False)
    table = cls(app, name="counts", default=int, beacon=app.tables.beacon)
    table.using_window(faust.TumblingWindow(PANE, expires=expires))
    return table


def _write(table, movie: str, start: float, partition: int = 0) -> None:
    key = (movie, (start, start + PANE))
    table.data[key] = 1
    table._maybe_set_key_ttl(key, partition)


def test_stock_table_notes_every_write():
    """What ``WindowedTable`` fixes: faust.Table's heap grows with every write."""
    table = _table(faust.Table)
    for _ in range(1000):
        _write(table, "m1", 0.0)
    assert len(table._partition_timestamps[0]) == 1000


def test_one_heap_entry_per_window_and_partition():
    table = _table(WindowedTable)
    for i in range(1000):
        _write(table, f"m{i % 50}", 0.0)
        _write(table, f"m{i % 50}", PANE)
        _write(table, f"m{i % 50}", PANE, partition=1)
    assert sorted(table._partition_timestamps[0]) == [PANE, 2 * PANE]
    assert table._partition_timestamps[1] == [2 * PANE]
    assert len(table._partition_timestamp_keys[(0, PANE)]) == 50
    assert table._partition_latest_timestamp[0] == 2 * PANE


@pytest.mark.parametrize("cls", [faust.Table, WindowedTable])
def test_expired_windows_are_dropped_as_before(cls):
    """Expiry drops every key of an expired window, and a window written again
    after it expired is noted (and dropped) again."""
    table = _table(cls)
    for i in range(10):
        _write(table, f"m{i}", 0.0)
        _write(table, f"m{i}", PANE)
    asyncio.run(table._del_old_keys())  # window ends in 1970: long expired
    assert not table._partition_timestamps[0]
    assert not table._partition_timestamp_keys
    assert len(table.data) == 0
    _write(table, "m0", 0.0)
    assert table._partition_timestamps[0] == [PANE]
    asyncio.run(table._del_old_keys())
    assert len(table.data) == 0


def test_changelog_deletes_what_is_older_than_the_expiry():
    """Compaction alone keeps one record per key and window forever."""
    topic = _table(WindowedTable).changelog_topic
    assert topic.compacting and topic.deleting
    assert topic.retention == 60.0
