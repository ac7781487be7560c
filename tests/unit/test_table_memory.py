"""The rating table's RocksDB partitions hold no block cache.

Compactions keep rewriting the table's few small files, and a block cache
kept the old files' blocks until it was full: in a soak it grew about
0.2 MB a minute toward 4 MB per partition (bench/README.md, "Soak").  Here
a partition opened with the table's own options is written, flushed,
compacted and read, the way the worker uses it, and must cache nothing.
"""
from __future__ import annotations

import os

import pytest
from faust.stores.rocksdb import RocksDBOptions

from streamapp.config import Settings


@pytest.fixture
def options(monkeypatch):
    monkeypatch.delenv("ROCKSDB_BLOCK_CACHE_MB", raising=False)
    return RocksDBOptions(**Settings().rocksdb_table_options(), use_rocksdict=True)


def _read_after_compactions(db) -> None:
    for _round in range(3):
        for i in range(20_000):
            db[b"title-%05d" % i] = os.urandom(60)
        db.flush()
        db.compact_range(None, None)
        for i in range(0, 20_000, 3):
            assert db[b"title-%05d" % i] is not None


def test_table_options_cache_no_blocks(options, tmp_path):
    db = options.open(tmp_path / "partition-0")
    try:
        _read_after_compactions(db)
        # RocksDB keeps one small entry of its own (87 bytes); no data block (4 KB).
        assert db.property_int_value("rocksdb.block-cache-usage") < 1024
    finally:
        db.close()


def test_a_configured_cache_does_fill(options, tmp_path):
    """The check above can fail: with a cache, the same reads fill it."""
    options.block_cache_size = 4 * 2**20
    db = options.open(tmp_path / "partition-0")
    try:
        _read_after_compactions(db)
        assert db.property_int_value("rocksdb.block-cache-usage") > 100_000
    finally:
        db.close()
