"""What every pass shares: names, targets, the benchmark's namespace, small helpers."""
from __future__ import annotations

import asyncio
import os
import platform
import time
from datetime import datetime
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import psutil

from tests.harness import ROOT, isolated_env

RESULTS = ROOT / "bench" / "results"
STREAM_NAMES = ("users", "subscriptions", "payments", "preferences", "ratings", "sessions",
                "catalog")
ACCOUNT_PREFIXES = ("user.", "subscription.", "payment.", "preference.")
SESSION_TYPES = ("session.started", "session.heartbeat", "session.ended")
#: PostgreSQL / MongoDB database and Redis database of the benchmark (the
#: test modules use ``streamapp_test*`` and Redis databases 1, 5, 6 and 7).
BENCH_DATABASE = "streamapp_bench"
BENCH_REDIS_DB = 9
#: The targets a run is judged on (bench/README.md, "Results").
LATENCY_TARGET_S = 0.25
TARGET_VS_PASSTHROUGH = 0.8
#: ... and no single round's ratio below this.
TARGET_VS_PASSTHROUGH_EVERY_ROUND = 0.7
TARGET_VS_PER_EVENT = 12.0
TARGET_VS_PER_EVENT_EVERY_KIND = 5.0
#: Longest wait for an earlier round of pass 3 (the whole run stays under 5 minutes).
ROUND_TIMEOUT_S = 60.0

#: (unix time, cumulative events done) samples of one pass.
Timeline = List[Tuple[float, int]]


def bench_env(tag: str) -> Dict[str, str]:
    """``isolated_env`` with databases of the benchmark's own, so that it never
    empties (or is emptied by) a test run's databases."""
    env = isolated_env(tag, database=BENCH_DATABASE, redis_db=BENCH_REDIS_DB)
    env["TABLE_STORE"] = "rocksdb://"
    return env


async def cancel(task: Optional[asyncio.Task]) -> None:
    """Cancel a background task and wait until it has stopped."""
    if task is not None:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


def say(message: str) -> None:
    print(f"bench: {message}", flush=True)


def machine_info() -> dict:
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import aiokafka
    import faust

    return {"cpu_count": os.cpu_count(), "cpu_model": model,
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "faust": faust.__version__, "aiokafka": aiokafka.__version__,
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def faust_ready_at(log_path: Path) -> Optional[float]:
    """Unix time of a Faust worker's first ``Worker]: Ready`` (its fetcher has started)."""
    return logged_at(log_path, "Worker]: Ready")


def logged_at(log_path: Path, marker: str) -> Optional[float]:
    """Unix time of the first log line holding ``marker``.  Faust and Quix
    Streams both start their lines with the local time, ``[2024-01-31 12:00:00,123]``."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if marker in line and line.startswith("["):
            try:
                when = datetime.strptime(line[1:line.index("]")], "%Y-%m-%d %H:%M:%S,%f")
            except ValueError:
                return None
            return time.mktime(when.timetuple()) + when.microsecond / 1e6
    return None
