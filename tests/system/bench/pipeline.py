"""Pass 3, the full pipeline: the real worker (every store, the tables, the audit trail)
on the fixed stream, timed until every store equals the simulator's summary.

``run_pipeline`` also runs pass 4 (``per_event``) and the earlier rounds.
"""
from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from tests.harness import expected_vs_tally, settings_for, stores_for
from tests.system.bench.by_kind import KindSamples, kind_progress, wanted_by_kind
from tests.system.bench.common import SESSION_TYPES, Timeline, faust_ready_at
from tests.system.bench.measure import CpuAccount, Probe, Sampler
from tests.system.bench.numbers import per_second, rate
from tests.system.bench.procs import RUNNING, start_audit, start_worker
from tests.system.bench.topics import deadletter_size, last_outcome_at


def pipeline_env(base: Dict[str, str], tag: str, name: str, work: Path,
                 **extra: str) -> Dict[str, str]:
    """A pipeline pass's settings: the shared event topics, and its own app id,
    output topics (outcomes, dead letters), audit indices and table data."""
    return {**base, "STREAMAPP_ID": f"streamapp-{tag}-{name}",
            "OUTPUT_TOPIC_PREFIX": f"{tag}.{name}",
            "AUDIT_INDEX_PREFIX": f"{tag}-{name}-audit", "AUDIT_IN_WORKER": "false",
            "STREAMAPP_DATA_DIR": str(work / f"{name}-data"), **extra}


def batch_stages(port: int) -> Dict[str, Dict[str, float]]:
    """Seconds the worker's agents spent per stage, from its Prometheus metrics."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError as exc:
        return {"error": {str(exc)[:100]: 0.0}}
    stages: Dict[str, Dict[str, float]] = {}
    for m in re.finditer(r'^streamapp_batch_seconds_sum\{(.*)\} (\S+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        stages.setdefault(labels["stream"], {})[labels["stage"]] = round(float(m.group(2)), 2)
    return stages


async def run_pipeline(name: str, env: Dict[str, str], summary: dict, budget: Optional[float],
                       timeout: float, work: Path, profile: Optional[Path] = None) -> dict:
    """Start a streamapp worker; watch it until all is durable, or until ``budget``
    seconds after it became ready, or ``timeout`` seconds after its start; in the
    last two cases the rate is the events durable by then."""
    return await PipelinePass(name, env, summary, budget, timeout, work, profile).run()


class PipelinePass:
    """One run of the real worker, polled every 0.5 s: its state between the steps."""

    def __init__(self, name: str, env: Dict[str, str], summary: dict, budget: Optional[float],
                 timeout: float, work: Path, profile: Optional[Path]) -> None:
        self.name, self.env, self.work, self.profile = name, env, work, profile
        self.budget, self.timeout = budget, timeout
        self.total = summary["events"]
        self.expect = json.loads(json.dumps(summary))
        self.wanted = wanted_by_kind(summary)
        self.timeline: Timeline = []
        self.kinds: KindSamples = []
        self.exits: List[dict] = []
        self.ready: Optional[float] = None  # the worker's 'Ready' log line
        self.first: Optional[float] = None  # the first event durable
        self.end: Optional[float] = None
        self.durable: Optional[float] = None  # every event in its stores
        self.result: dict = {}
        self.usage: dict = {}

    async def run(self) -> dict:
        await self.start()
        try:
            await self.watch()
            stages = batch_stages(self.worker.port)
        finally:
            await self.sampler.stop()
            await self.probe.close()
            await self.stores.close()
        return self.report(stages)

    async def start(self) -> None:
        # Dead letters already in this pass's topic (none unless it is reused) count too.
        self.expect["expect"]["deadletter"] += await deadletter_size(self.env)
        self.started = time.time()
        self.worker = start_worker(self.env, self.work, self.name, self.profile)
        RUNNING[self.name] = self.worker
        start_audit(self.env, self.work, self.name)
        self.probe, self.stores, self.cfg = (Probe(self.env, self.expect["expect"]["mongodb"]["movies"]),
                                             stores_for(self.env), settings_for(self.env))
        self.sampler = Sampler(self.worker.proc.pid).start()
        self.cpu = CpuAccount(self.worker.proc.pid).start()

    async def watch(self) -> None:
        """Poll until all is durable and the projections agree, or time is up."""
        while True:
            if self.worker.proc.poll() is not None:
                await self.restart()
            now = time.time()
            counts = await self.probe.counts()
            await self.note(now, counts)
            out_of_time = now - self.started > self.timeout
            if out_of_time or (self.budget is not None and self.ready is not None
                               and now - self.ready >= self.budget):
                await self.cut_short(now, out_of_time)
                return
            if await self.converged(now, counts):
                return
            await asyncio.sleep(max(0.0, 0.5 - (time.time() - now)))

    async def restart(self) -> None:
        """Deployed workers run under a supervisor that restarts them; do the same
        once (offsets were committed only for durable batches) and report it.  A
        second exit fails the pass."""
        worker = self.worker
        self.exits.append({"after_s": round(time.time() - self.started, 1),
                           "status": worker.proc.returncode, "log_tail": worker.tail(8)})
        print(f"bench: {self.name} worker exited with status {worker.proc.returncode}",
              file=sys.stderr, flush=True)
        if len(self.exits) > 1:
            raise RuntimeError(f"{self.name} worker exited twice: {self.exits}")
        peak = self.sampler.peak_rss
        await self.sampler.stop()
        self.worker = start_worker(self.env, self.work, f"{self.name}-restarted", self.profile)
        RUNNING[self.name] = self.worker
        self.sampler = Sampler(self.worker.proc.pid).start()
        self.sampler.peak_rss = peak
        self.cpu.worker_pid = self.worker.proc.pid

    async def note(self, now: float, counts: Dict[str, int]) -> None:
        """One poll's counts; the worker's start and the first durable event once seen."""
        if self.durable is None:  # afterwards only the projections are awaited
            self.timeline.append((now, counts["done"]))
        self.kinds.append((now, counts))
        if self.ready is None:
            self.ready = faust_ready_at(self.worker.log_path)
            if self.ready is not None:
                self.cpu.start()  # account for the timed part only, not start-up
        if self.first is None and counts["done"]:
            self.first = await self.probe.first_durable() or now

    async def cut_short(self, now: float, out_of_time: bool) -> None:
        """Out of time or budget: the rate is the events durable now, counted exactly."""
        from streamapp.tally import mongo_counts, postgres_counts, redis_counts, tally

        stores = self.stores
        pg, rd, mg = (await postgres_counts(stores), await redis_counts(stores),
                      await mongo_counts(stores))
        done = (pg["applied_events"] + rd["rating.submitted"]
                + sum(rd[t] for t in SESSION_TYPES) + mg["movies"])
        self.end = now
        self.timeline.append((now, done))
        self.usage = self.cpu.stop()
        self.result = {"events": done, "of": self.total, "all_durable": False,
                       "stopped_after_s": round(now - (self.ready or self.started), 1),
                       "stopped_because": "timeout" if out_of_time else "time budget",
                       "durable_counted_via_tally": {
                           "postgres.applied_events": pg["applied_events"],
                           "redis.rating.submitted": rd["rating.submitted"],
                           "redis.session.*": sum(rd[t] for t in SESSION_TYPES),
                           "mongodb.movies (distinct titles)": mg["movies"]}}
        if out_of_time:
            self.result["not_durable_yet"] = expected_vs_tally(self.expect, await tally(stores, self.cfg))

    async def converged(self, now: float, counts: Dict[str, int]) -> bool:
        """Whether every event is durable and every store equals the summary."""
        from streamapp.tally import tally

        if self.durable is None and all(counts[k] >= n for k, n in self.wanted.items()):
            self.durable = now
            self.timeline.append((now, self.total))
            self.usage = self.cpu.stop()
        if self.durable is None:
            return False
        # Every event is in its stores; the projections refreshed on timers
        # (MongoDB's rating aggregates, leaderboards) must converge too.
        if expected_vs_tally(self.expect, await tally(self.stores, self.cfg)):
            return False
        # The poll saw it within 0.5 s; the last outcome says when exactly.
        self.end = min(self.durable, await last_outcome_at(self.cfg, self.started) or self.durable)
        self.timeline = [p for p in self.timeline if p[0] < self.end] + [(self.end, self.total)]
        self.result = {"events": self.total, "of": self.total, "all_durable": True,
                       "tally_equals_summary": True,
                       "tally_equal_after_s": round(now - (self.ready or self.started), 1),
                       "tally_measured": (
                           "every store equals the simulator's summary, including"
                           " projections refreshed on timers: MongoDB rating"
                           " aggregates every TITLE_AGGREGATE_INTERVAL_S, leaderboards"
                           " every MIRROR_INTERVAL_S")}
        return True

    def report(self, stages: Dict[str, Dict[str, float]]) -> dict:
        start, end, started = self.ready or self.first, self.end, self.started
        first, ready, cfg = self.first, self.ready, self.cfg
        finished, kind_rates = kind_progress(self.kinds, self.wanted, start, end)
        return {
            "what": ("faust -A streamapp worker (PostgreSQL, MongoDB, Redis, tables) next to"
                     " python -m streamapp.audit (S3: OpenSearch), as make run deploys them"),
            **self.result,
            "batch_size": cfg.batch_size,
            "batch_within_s": cfg.batch_within_s,
            "events_per_s": rate(self.result["events"], start, end),
            "seconds": round(end - start, 2) if start and end else None,
            "seconds_including_startup": round(end - started, 2) if end else None,
            "first_durable_after_ready_s": round(first - ready, 2) if first and ready else None,
            "rate_measured": ("events durable / (time they were durable - the worker's 'Ready'"
                              " log line); durable = account events in PostgreSQL's ledger,"
                              " ratings and session events counted in Redis, titles in MongoDB,"
                              " seen by a 0.5 s poll of the stores; once all are, the time is"
                              " that of the last outcome message the worker sent (S2 sends one"
                              " right after each store write), else the poll's"),
            **self.sampler.report(start, end),
            "cpu_cores_by_process": self.usage,
            "worker_exits": self.exits,
            "batch_seconds_by_stream_and_stage": stages,
            "batch_seconds_measured": ("sum of the worker's streamapp_batch_seconds histogram"
                                       " (its /metrics) per agent and stage, over the pass: where"
                                       " the agents' time went; 'kafka' is waiting for outcome and"
                                       " dead-letter deliveries"),
            "kind_done_after_s": finished,
            "kind_events_per_s": kind_rates,
            "kind_done_after_s_measured": ("seconds after 'Ready' at which each kind of event was"
                                           " all durable (accounts: PostgreSQL ledger; ratings,"
                                           " sessions: Redis counts; titles: MongoDB documents)"),
            "throughput_per_s": [[round(t, 1), round(n, 1)] for t, n in
                                 per_second(self.timeline, start or started)],
            "counts_over_time": [[round(t - (start or started), 1), c["accounts"], c["ratings"],
                                  c["sessions"], c["titles"]] for t, c in self.kinds],
            "counts_over_time_columns": ["s", "accounts", "ratings", "sessions", "titles"],
        }
