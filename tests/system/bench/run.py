"""The run: one fixed stream, then the passes in order, then the results.

``BenchRun`` holds what the steps share (the namespace, the work directory,
the results so far); each step is one method.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Optional

from tests.harness import ROOT, drop_namespaces, reset_stores, settings_for, simulate
from tests.system.bench.ceiling import pass_ceiling
from tests.system.bench.common import ROUND_TIMEOUT_S, bench_env, say
from tests.system.bench.latency import pass_latency
from tests.system.bench.mongo_compare import compare_mongodb
from tests.system.bench.passthrough import pass_passthrough
from tests.system.bench.peer import PEER, pass_peer_passthrough
from tests.system.bench.per_event import pass_per_event, per_event_env
from tests.system.bench.pipeline import pipeline_env, run_pipeline
from tests.system.bench.procs import RUNNING, pin_stack, stop_worker, unpin
from tests.system.bench.report import empty_results, output_name, render_profile, summarise, write_results
from tests.system.bench.sustained import pass_sustained
from tests.system.bench.titles import pass_mongo_titles
from tests.system.mongo_candidates import server_info


def single_run_lock():
    """Hold an exclusive lock for the run, or None if another run holds it.

    Two benchmarks at once would share the benchmark's databases (and each
    other's CPU), so a second one does not start.
    """
    import fcntl

    path = ROOT / ".stack" / "bench.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


#: Passes in the order they run (``--passes`` picks a subset).
PASSES = ("ceiling", "passthrough", PEER, "per_event", "pipeline", "sustained", "mongo_titles")


async def run(args: argparse.Namespace) -> int:
    lock = single_run_lock()
    if lock is None:
        say("another benchmark is running on this machine (.stack/bench.lock); not starting")
        return 2
    try:
        return await _run(args)
    finally:
        lock.close()


async def _run(args: argparse.Namespace) -> int:
    bench = BenchRun(args)
    try:
        await bench.produce()
        if args.profile:
            await bench.profile_pass()
        else:
            await bench.passes()
    finally:
        await bench.clean_up()
    return bench.finish()


class BenchRun:
    """One benchmark run: its namespace, work directory and results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.wall_start = time.monotonic()  # the time limit counts from here
        self.run_start = self.wall_start
        if args.pin_worker:
            pin_stack()
        self.tag = f"bench{uuid.uuid4().hex[:6]}"
        self.work = Path(tempfile.mkdtemp(prefix="streamapp-bench-"))
        self.base = bench_env(self.tag)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results = empty_results(args)
        self.failed = False

    async def attempt(self, name: str, coro) -> Optional[dict]:
        """Run one pass; a failure is recorded in its place and the run goes on."""
        say(f"pass {name} ...")
        try:
            result = await coro
        except Exception as exc:
            self.failed = True
            traceback.print_exc()
            self.results["passes"][name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            return None
        self.results["passes"][name] = result
        shown = {k: result.get(k) for k in ("events", "events_per_s", "seconds",
                                             "peak_rss_mb", "cpu_cores_used")}
        say(f"pass {name}: {shown}")
        return result

    async def produce(self) -> None:
        """The fixed stream, produced once into the namespace's topics."""
        args = self.args
        say(f"namespace {self.tag}; producing {args.count} events (seed {args.seed}) ...")
        summary = simulate(self.base, "--count", str(args.count), "--rate", "0",
                           "--seed", str(args.seed), summary=self.work / "summary.json")
        self.results["events"].update(per_topic=summary["per_topic"],
                                      producer_events_per_s=summary["rate"])
        cfg = settings_for(self.base)
        self.results["config"] = {"batch_size": cfg.batch_size, "batch_within_s": cfg.batch_within_s,
                                  "processing_guarantee": cfg.processing_guarantee,
                                  "topic_partitions": cfg.topic_partitions,
                                  "audit_in_worker": cfg.audit_in_worker,
                                  "table_store": cfg.table_store,
                                  "worker_pinned_to_own_core": bool(args.pin_worker),
                                  "mongodb_server": await server_info(self.base["MONGODB_URL"])}
        self.summary = summary
        self.total = summary["events"]

    async def profile_pass(self) -> None:
        """``--profile``: only the pipeline pass (and its latency), under pyinstrument."""
        args = self.args
        await reset_stores(self.base)
        session = self.work / "profile.pyisession"
        env = pipeline_env(self.base, self.tag, "profiled", self.work)
        try:
            profiled = await self.attempt("pipeline_profiled", run_pipeline(
                "pipeline_profiled", env, self.summary, None, args.timeout, self.work, session))
            if profiled and profiled.get("events_per_s") and args.latency_seconds > 0:
                await self.attempt("latency_profiled", pass_latency(
                    env, RUNNING["pipeline_profiled"], profiled["events_per_s"] * 0.5,
                    args.latency_seconds, args.seed + 1, self.work, audit_wait=30.0))
        finally:
            stop_worker("pipeline_profiled")
        render_profile(session, self.out / "profile.txt")
        say(f"profile written to {self.out / 'profile.txt'}")

    async def passes(self) -> None:
        """Every pass (or those of ``--passes``), in the order of ``PASSES``."""
        args = self.args
        if "ceiling" in args.passes:
            await self.attempt("ceiling", pass_ceiling(self.base, self.total, self.work))
        await self.earlier_rounds()
        await self.passthroughs("")
        if args.compare_mongodb:  # before the live passes add events to the topics
            await self.compare_mongodb()
        # BATCH_SIZE=1 before the batched pass, so that the batched worker
        # stays up for the latency pass without feeding its events to this one.
        if "per_event" in args.passes:
            await self.per_event()
        await self.pipeline()
        if "mongo_titles" in args.passes:
            await self.attempt("mongo_titles", pass_mongo_titles(self.base))

    async def passthroughs(self, suffix: str) -> None:
        """Pass 2 and the peer pass (Quix Streams), one after the other."""
        if "passthrough" in self.args.passes:
            await self.attempt(f"passthrough{suffix}", pass_passthrough(
                self.base, self.total, self.work, f"passthrough{suffix}"))
        if PEER in self.args.passes:
            await self.attempt(f"{PEER}{suffix}", pass_peer_passthrough(
                self.base, self.total, self.work, f"{PEER}{suffix}"))

    async def earlier_rounds(self) -> None:
        """Earlier rounds of passes 2, peer and 3, alternating, for the medians;
        the last round is the one reported in full (and pass 3's worker stays up)."""
        args = self.args
        repeated = bool({"passthrough", PEER} & args.passes)
        for round_ in range(1, args.repeats if repeated else 1):
            await self.passthroughs(f"_{round_}")
            await reset_stores(self.base)
            name = f"pipeline_{round_}"
            done = await self.attempt(name, self.pipeline_round(name, self.base))
            if done:  # the last round carries the details; keep the rates
                done.pop("counts_over_time", None)

    async def pipeline_round(self, name: str, base: dict) -> dict:
        """One earlier round of pass 3 on ``base``'s stores, its worker stopped after it."""
        try:
            return await run_pipeline(name, pipeline_env(base, self.tag, name, self.work),
                                      self.summary, None,
                                      min(self.args.timeout, ROUND_TIMEOUT_S), self.work)
        finally:
            stop_worker(name)

    async def per_event(self) -> None:
        await reset_stores(self.base)
        env = per_event_env(self.base, self.tag, self.work)
        try:
            await self.attempt("per_event", pass_per_event(
                env, self.summary, self.args.per_event_budget, self.args.timeout, self.work))
        finally:
            stop_worker("per_event")

    async def pipeline(self) -> None:
        """Pass 3; its worker then stays up for the sustained and latency passes."""
        args = self.args
        await reset_stores(self.base)
        env = pipeline_env(self.base, self.tag, "pipeline", self.work)
        # Whatever is left of the time limit, minus the latency pass and wrap-up.
        left = (args.max_seconds - (time.monotonic() - self.wall_start) - args.latency_seconds
                - args.sustained_seconds - 75)
        timeout = max(30.0, min(args.timeout, left))
        try:
            pipeline = await self.attempt("pipeline", run_pipeline(
                "pipeline", env, self.summary, None, timeout, self.work))
            if (pipeline and pipeline.get("events_per_s") and args.latency_seconds > 0
                    and "sustained" in args.passes):
                await self.live_passes(env, pipeline["events_per_s"])
        finally:
            stop_worker("pipeline")

    async def live_passes(self, env: dict, pipeline_rate: float) -> None:
        """Producers live into pass 3's worker: the sustained rate, then latency at half of it."""
        args = self.args
        sustained = await self.attempt("sustained", pass_sustained(
            env, RUNNING["pipeline"], pipeline_rate, args.sustained_seconds, args.seed + 2, self.work))
        rate_for_latency = (sustained or {}).get("events_per_s") or pipeline_rate
        # The audit trail (its own consumer group) may still be indexing
        # the backlog; wait for it, within what is left of the time limit.
        left = args.max_seconds - (time.monotonic() - self.wall_start) - args.latency_seconds - 30
        await self.attempt("latency_at_half_rate", pass_latency(
            env, RUNNING["pipeline"], rate_for_latency * 0.5,
            args.latency_seconds, args.seed + 1, self.work,
            audit_wait=max(0.0, min(90.0, left))))

    async def compare_mongodb(self) -> None:
        """``--compare-mongodb``: pass 3 and the title pass on each MongoDB server."""
        args = self.args
        say(f"comparing MongoDB servers: {', '.join(args.compare_mongodb)} ...")
        started = time.monotonic()
        try:
            self.results["mongodb_comparison"] = await compare_mongodb(
                self.base, args.compare_mongodb, args.compare_rounds, self.work, self.pipeline_round)
        except Exception as exc:
            self.failed = True
            traceback.print_exc()
            self.results["mongodb_comparison"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            return
        finally:  # the passes after it keep the time limit they have without it
            self.wall_start += time.monotonic() - started
        for name, entry in self.results["mongodb_comparison"]["servers"].items():
            say(f"mongodb {name}: pipeline median {entry['median_pipeline_events_per_s']} events/s, "
                f"title upserts {entry['title_upserts_per_s']}/s")

    async def clean_up(self) -> None:
        for name in list(RUNNING):
            stop_worker(name)
        unpin()
        await drop_namespaces([self.tag])

    def finish(self) -> int:
        """Ratios and targets, the result files; the work directory goes unless kept."""
        args, results = self.args, self.results
        if not args.profile:
            summarise(results, args.per_event_budget)
        results["wall_s"] = round(time.monotonic() - self.run_start, 1)
        write_results(results, self.out, output_name(args, set(PASSES)))
        if self.failed or args.keep:
            say(f"logs kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        return 1 if self.failed else 0
