"""What a pass has done and used: stores' progress counters, a worker's RSS and CPU."""
from __future__ import annotations

import asyncio
import os
import time
import urllib.parse
from typing import Dict, List, Optional, Tuple

import psutil

from tests.harness import stores_for
from tests.system.bench.common import SESSION_TYPES, cancel


class Probe:
    """Cheap progress counters, read every half second during a pass.

    An event counts as done when its last store has it: account events by
    PostgreSQL's ledger (one transaction per batch), ratings and sessions by
    their Redis event counts (Redis is the ratings agent's last step),
    catalog events by the titles in MongoDB (distinct titles: an undercount
    of re-edits, a few percent of the catalog topic; read every second).
    """

    #: Titles are counted with ``collStats`` (about 10 ms of FerretDB's CPU
    #: for 500 titles; a ``count`` scans the collection, 85-130 ms), at most
    #: this often, and not at all once every expected title is there: the
    #: probe must not load the system it measures.  The count includes any
    #: document a removal created for a title never upserted; the final
    #: ``tally`` checks the titles exactly.
    TITLES_EVERY_S = 1.0

    def __init__(self, env: Dict[str, str], titles_expected: Optional[int] = None) -> None:
        self.env = env
        self.titles_expected = titles_expected
        self._titles = 0
        self._titles_at = 0.0
        self._pg = None
        self._redis = None
        self._mongo = None

    async def _connect(self) -> None:
        import asyncpg
        from pymongo import AsyncMongoClient

        if self._pg is None:
            self._pg = await asyncpg.connect(self.env["POSTGRES_DSN"])
        if self._redis is None:
            self._redis = stores_for(self.env).redis
        if self._mongo is None:
            self._mongo = AsyncMongoClient(self.env["MONGODB_URL"])

    async def pg(self, query: str, *args, default=None):
        import asyncpg

        await self._connect()
        try:
            return await self._pg.fetch(query, *args)
        except asyncpg.UndefinedTableError:
            return default

    async def counts(self) -> Dict[str, int]:
        await self._connect()
        rows = await self.pg("SELECT (SELECT count(*) FROM applied_events) AS a,"
                             " (SELECT count(*) FROM ratings) AS r", default=[{"a": 0, "r": 0}])
        types = SESSION_TYPES + ("rating.submitted",)
        counted = await self._redis.counts()
        redis_counts = {t: counted.get(t, 0) for t in types}
        complete = self.titles_expected is not None and self._titles >= self.titles_expected
        if not complete and time.time() - self._titles_at >= self.TITLES_EVERY_S:
            db = self._mongo[urllib.parse.urlsplit(self.env["MONGODB_URL"]).path.lstrip("/")]
            self._titles = int((await db.command({"collStats": "movies"})).get("count") or 0)
            self._titles_at = time.time()
        titles = self._titles
        counts = {"accounts": int(rows[0]["a"]), "rating_rows": int(rows[0]["r"]),
                  "ratings": redis_counts["rating.submitted"],
                  "sessions": sum(redis_counts[t] for t in SESSION_TYPES),
                  "titles": titles}
        counts["done"] = counts["accounts"] + counts["ratings"] + counts["sessions"] + titles
        return counts

    async def first_durable(self) -> Optional[float]:
        rows = await self.pg("SELECT extract(epoch FROM min(applied_at))::float8 AS t"
                             " FROM applied_events", default=[{"t": None}])
        return rows[0]["t"]

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._redis is not None:
            await self._redis.close()
        if self._mongo is not None:
            await self._mongo.close()


def tree_usage(proc: psutil.Process) -> Optional[Tuple[float, float]]:
    """(resident bytes, CPU seconds) of a process and its children; None once it is gone."""
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return None
    rss = cpu = 0.0
    for p in procs:
        try:
            rss += p.memory_info().rss
            times = p.cpu_times()
            cpu += times.user + times.system
        except psutil.Error:
            pass
    return rss, cpu


class Sampler:
    """Peak RSS (process plus children) and CPU time of a worker, every 0.5 s."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak_rss = 0
        self.cpu: List[Tuple[float, float]] = []  # (unix time, cpu seconds)
        self._task: Optional[asyncio.Task] = None

    def sample(self) -> None:
        usage = tree_usage(self.proc)
        if usage is None:
            return
        rss, cpu = usage
        self.peak_rss = max(self.peak_rss, int(rss))
        self.cpu.append((time.time(), cpu))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.5)

    def start(self) -> Sampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self) -> None:
        await cancel(self._task)

    def cpu_share(self, start: float, end: float) -> Optional[float]:
        """Cores used on average between two times (1.0 = one core busy)."""
        inside = [(t, c) for t, c in self.cpu if start - 0.5 <= t <= end + 0.5]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return round((inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]), 2)

    def report(self, start: Optional[float] = None, end: Optional[float] = None) -> dict:
        out = {"peak_rss_mb": round(self.peak_rss / 2**20, 1)}
        if start and end:
            out["cpu_cores_used"] = self.cpu_share(start, end)
        return out


class CpuAccount:
    """CPU used during a pass, by kind of process: is the machine the limit?

    Two snapshots of every process's CPU time; the difference over the wall
    time is the average number of cores each group kept busy.  Python
    processes that are not this benchmark's are reported as
    ``other python`` (the machine is shared).
    """

    def __init__(self, worker_pid: Optional[int] = None) -> None:
        self.worker_pid = worker_pid
        self.me = os.getpid()

    def _group(self, proc: psutil.Process, mine: set, worker: set) -> str:
        if proc.pid in worker:
            return "worker"
        if "streamapp.audit" in " ".join(proc.info.get("cmdline") or []):
            return "audit (S3, its own process)"
        name = (proc.info.get("name") or "").lower()
        cmd = " ".join(proc.info.get("cmdline") or []).lower()
        # Before "mine": --compare-mongodb starts MongoDB servers as children.
        if "ferretdb" in name:
            return "ferretdb (mongodb)"
        if name.startswith(("secantusd", "mongod")):
            return f"{name} (mongodb)"
        if proc.pid in mine:
            return "benchmark (this process, producers)"
        if name.startswith("postgres"):
            # FerretDB on PostgreSQL keeps its collections in the "ferretdb" database.
            return "postgres (ferretdb's backend)" if " ferretdb " in f" {cmd} " else "postgres"
        if "redis-server" in name:
            return "redis"
        if name == "java" and "opensearch" in cmd:
            return "opensearch"
        if name == "java" and "kafka" in cmd:
            return "kafka"
        if name.startswith("python"):
            return "other python"
        return "other"

    def _snapshot(self) -> Tuple[float, Dict[int, Tuple[str, float]], float, float]:
        me = psutil.Process(self.me)
        mine = {self.me} | {c.pid for c in me.children(recursive=True)}
        worker: set = set()
        if self.worker_pid:
            try:
                wp = psutil.Process(self.worker_pid)
                worker = {wp.pid} | {c.pid for c in wp.children(recursive=True)}
            except psutil.Error:
                pass
        procs: Dict[int, Tuple[str, float]] = {}
        for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
            times = proc.info.get("cpu_times")
            if times is None:
                continue
            procs[proc.pid] = (self._group(proc, mine, worker), times.user + times.system)
        t = psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        return time.monotonic(), procs, sum(t) - idle, sum(t)

    def start(self) -> CpuAccount:
        self._start = self._snapshot()
        return self

    def stop(self) -> dict:
        t0, before, busy0, total0 = self._start
        t1, after, busy1, total1 = self._snapshot()
        wall = max(t1 - t0, 1e-6)
        groups: Dict[str, float] = {}
        for pid, (group, cpu) in after.items():
            used = cpu - before[pid][1] if pid in before else cpu
            groups[group] = groups.get(group, 0.0) + max(used, 0.0)
        cores = os.cpu_count() or 1
        out = {g: round(v / wall, 2) for g, v in sorted(groups.items(), key=lambda kv: -kv[1])
               if v / wall >= 0.01}
        out["machine_busy_share"] = round((busy1 - busy0) / max(total1 - total0, 1e-6), 2)
        out["cores"] = cores
        return out
