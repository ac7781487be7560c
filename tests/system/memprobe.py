"""Run ``faust -A streamapp worker`` with a memory probe inside it.

``python -m tests.system.memprobe -A streamapp worker -l info`` is the
worker as deployed plus a timer that appends one JSON line per interval to
``MEMPROBE_OUT``: resident memory, glibc's heap (``mallinfo2``), the
windowed tables' expiry structures, each RocksDB partition's memory and
files, the largest Python object counts and, with ``MEMPROBE_TRACEMALLOC``
set to a frame depth, the allocations that grew most since the first
sample.  ``make soak`` starts the worker this way with ``--probe``; a probe
costs CPU (and tracemalloc memory), so the committed soak runs without it.
"""
from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Optional

import psutil

OUT = os.environ.get("MEMPROBE_OUT", "memprobe.jsonl")
EVERY_S = float(os.environ.get("MEMPROBE_EVERY_S", "60"))
FRAMES = int(os.environ.get("MEMPROBE_TRACEMALLOC", "0"))

#: RocksDB properties read from every partition's database.
ROCKSDB_PROPERTIES = (
    "rocksdb.cur-size-all-mem-tables",
    "rocksdb.estimate-table-readers-mem",
    "rocksdb.block-cache-usage",
    "rocksdb.block-cache-pinned-usage",
    "rocksdb.total-sst-files-size",
    "rocksdb.estimate-live-data-size",
    "rocksdb.estimate-num-keys",
    "rocksdb.num-live-versions",
)


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def mallinfo() -> Dict[str, int]:
    """glibc's view of the heap: bytes in use, free inside arenas, mmapped."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {"arena": info.arena, "in_use": info.uordblks, "free": info.fordblks,
            "mmapped": info.hblkhd, "keepcost": info.keepcost}


def dump_malloc_info(path: str) -> None:
    """glibc's ``malloc_info`` XML (per arena: free chunks by size) into ``path``."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        handle = libc.fopen(path.encode(), b"w")
        if handle:
            libc.malloc_info(0, handle)
            libc.fclose(handle)
    except (OSError, AttributeError):
        pass


def rss_by_mapping() -> Dict[str, float]:
    """Resident MB by kind of mapping: glibc's main heap, anonymous mappings
    (thread arenas, pymalloc arenas, large allocations), files (libraries)."""
    kinds: Counter = Counter()
    kind = "anon"
    try:
        with open("/proc/self/smaps") as smaps:
            for line in smaps:
                head = line.split(None, 6)
                if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                    name = head[5].strip() if len(head) > 5 else ""
                    kind = ("heap" if name == "[heap]" else "stack" if name.startswith("[stack")
                            else "anon" if not name or name.startswith("[anon") else "file")
                elif head[0] == "Rss:":
                    kinds[kind] += int(head[1])
    except OSError:
        return {}
    return {k: round(v / 1024, 2) for k, v in kinds.items()}


def table_stats(table: Any) -> Dict[str, Any]:
    """Sizes of a table's expiry bookkeeping and of its RocksDB partitions."""
    heaps = getattr(table, "_partition_timestamps", {})
    ts_keys = getattr(table, "_partition_timestamp_keys", {})
    stats: Dict[str, Any] = {
        "expiry_heap_entries": sum(len(h) for h in list(heaps.values())),
        "expiry_heap_distinct": sum(len(set(h)) for h in list(heaps.values())),
        "expiry_key_sets": len(ts_keys),
        "expiry_keys": sum(len(s) for s in list(ts_keys.values())),
    }
    dbs = getattr(table.data, "_dbs", None)
    if dbs:
        totals: Counter = Counter()
        for db in list(dbs.values()):
            for prop in ROCKSDB_PROPERTIES:
                try:
                    totals[prop.split(".", 1)[1]] += int(db.property_int_value(prop) or 0)
                except Exception:  # a property this build does not have
                    pass
        stats["rocksdb"] = dict(totals)
        stats["rocksdb_partitions"] = len(dbs)
    key_index = getattr(table.data, "_key_index", None)
    if key_index is not None:
        stats["key_index"] = len(key_index)
    return stats


def dir_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            total += p.stat().st_size if p.is_file() else 0
        except OSError:
            pass
    return total


class Probe:
    def __init__(self) -> None:
        self.first: Optional[tracemalloc.Snapshot] = None
        self.started = time.time()
        self.proc = psutil.Process()

    def sample(self, app: Any) -> Dict[str, Any]:
        gc.collect()
        counts = Counter(type(o).__name__ for o in gc.get_objects())
        from streamapp.config import settings

        line: Dict[str, Any] = {
            "t": round(time.time() - self.started, 1),
            "rss_mb": round(self.proc.memory_info().rss / 2**20, 2),
            "malloc": mallinfo(),
            "rss_by_mapping_mb": rss_by_mapping(),
            "pymalloc_blocks": sys.getallocatedblocks(),
            "gc_objects": sum(counts.values()),
            "types": dict(counts.most_common(25)),
            "tables": {name: table_stats(t) for name, t in app.tables.items()},
            "data_dir_bytes": dir_bytes(Path(settings.data_dir)),
            "threads": self.proc.num_threads(),
        }
        if os.environ.get("MEMPROBE_MALLOC_INFO"):
            dump_malloc_info(f"{OUT}.malloc_info.{int(line['t'])}.xml")
        if FRAMES:
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)])
            line["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
            if self.first is None:
                self.first = snap
            else:
                diff = snap.compare_to(self.first, "traceback" if FRAMES > 1 else "lineno")
                line["grew"] = [
                    {"kb": round(d.size_diff / 1024, 1), "count": d.count_diff,
                     "where": [f"{f.filename.split('site-packages/')[-1]}:{f.lineno}"
                               for f in d.traceback[:FRAMES]]}
                    for d in diff[:15]]
        return line


def install() -> None:
    if FRAMES:
        tracemalloc.start(FRAMES)
    from streamapp.app import app

    probe = Probe()

    @app.timer(EVERY_S)
    async def _memprobe() -> None:
        line = probe.sample(app)
        with open(OUT, "a") as out:
            out.write(json.dumps(line) + "\n")


def main() -> None:
    install()
    from faust.cli.faust import cli

    sys.argv = ["faust", *sys.argv[1:]]
    cli()


if __name__ == "__main__":
    main()
