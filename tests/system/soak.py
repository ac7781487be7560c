"""``make soak``: is the worker's memory flat over a long steady run?

Runs the pipeline as deployed (``faust -A streamapp worker`` next to
``python -m streamapp.audit``) in a namespace of its own, loads the catalog
with a short fixed stream, then produces live events at a steady rate
(default 500/s, about half the sustained rate ``make bench`` measures here)
for ``--minutes`` (default 10; ``make soak MINUTES=60`` for the long run).
The worker's resident memory (process and children) is sampled every 5 s,
and its table state every 30 s: the RocksDB files on disk and the records in
the table's changelog topic.

Flat means: the median RSS of the last minute is within 2 % of the median
of the minute at half time (the first minute is warm-up: tables, caches,
pools and buffers fill; a short run keeps growing while they do, so only a
long run tells).  Results go to ``bench/results/soak.json`` and
``soak.png``; the command exits non-zero if memory was not flat or the
worker fell behind the producer.  ``--probe FILE`` runs the worker under
``tests.system.memprobe`` (what grows inside it), ``--env NAME=VALUE`` sets
the worker's environment (for comparisons: ``LD_PRELOAD=`` runs it on
glibc's malloc instead of jemalloc, see ``streamapp/allocator.py``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import psutil

from streamapp.allocator import with_jemalloc
from tests.harness import FAUST_WORKER, drop_namespaces, reset_stores, simulate, wait_until
from tests.system.bench import (
    RESULTS,
    RUNNING,
    Probe,
    bench_env,
    faust_ready_at,
    machine_info,
    pipeline_env,
    single_run_lock,
    start_audit,
    start_producer,
    stop_worker,
    tree_usage,
)
from tests.system.bench.procs import Process, free_port

#: Largest growth of the median RSS from the minute at half time to the last
#: minute that still counts as flat.
FLAT_WITHIN = 0.02
#: The rating table (``tables/ratings.py``), whose state is sampled.
TABLE = "rating-counts"


def rss_mb(pid: int) -> float:
    try:
        usage = tree_usage(psutil.Process(pid))
    except psutil.Error:
        return 0.0
    return usage[0] / 2**20 if usage else 0.0


def window_median(series: List[Tuple[float, float]], start: float, end: float) -> float:
    values = [mb for t, mb in series if start <= t < end]
    return statistics.median(values) if values else 0.0


def growth_pct(before: float, after: float) -> Optional[float]:
    return round(100 * (after - before) / before, 2) if before else None


def dir_mb(path: Path) -> float:
    """Size of the files under ``path`` (the worker's RocksDB partitions)."""
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:  # a file RocksDB just deleted (compaction)
            pass
    return total / 2**20


def extra_env(pairs: List[str]) -> Dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--env wants NAME=VALUE, not {pair!r}")
        env[name] = value
    return env


def start_soak_worker(env: Dict[str, str], work: Path, probe: Optional[str]) -> Process:
    """The worker as ``make run`` starts it (on jemalloc where installed)."""
    argv = list(FAUST_WORKER)
    env = with_jemalloc(env)
    if probe:
        argv[:2] = ["-m", "tests.system.memprobe"]
        env = {**env, "MEMPROBE_OUT": str(Path(probe).resolve())}
    return Process(env, work / "soak.log", argv, port=free_port()).start()


async def changelog_size(env: Dict[str, str]) -> Tuple[int, float]:
    """Records (end minus start offsets) and MB on the brokers of the rating
    table's changelog topic."""
    from streamapp.config import Settings
    from streamapp.tally import topic_size
    from tests.system.logdirs import topic_bytes

    cfg = Settings.from_env(env)
    topic = f"{cfg.app_id}-{TABLE}-changelog"
    records = await topic_size(topic, cfg.kafka_bootstrap, cfg)
    return records, sum((await topic_bytes(topic, cfg)).values()) / 2**20


async def settled_done(probe: Probe, quiet_s: float = 5.0, timeout_s: float = 120.0) -> int:
    """Events durable once the count has not moved for ``quiet_s``."""
    seen = {"done": -1}

    async def still() -> bool:
        before, seen["done"] = seen["done"], (await probe.counts())["done"]
        return seen["done"] == before
    await wait_until(still, timeout=timeout_s, interval=quiet_s)
    return seen["done"]


async def soak(args: argparse.Namespace) -> int:
    tag = f"soak{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="streamapp-soak-"))
    base = bench_env(tag)
    seconds = args.minutes * 60
    count = int(args.rate * seconds)
    series: List[Tuple[float, float]] = []
    # (t, RocksDB MB, changelog records, changelog MB)
    state: List[Tuple[float, float, int, float]] = []
    result: dict = {}
    try:
        await reset_stores(base)
        print(f"soak: namespace {tag}; loading the catalog ...", flush=True)
        simulate(base, "--count", "3000", "--rate", "0", "--seed", "5",
                 summary=work / "catalog-summary.json")
        env = pipeline_env(base, tag, "soak", work, **extra_env(args.env))
        worker = start_soak_worker(env, work, args.probe)
        RUNNING["soak"] = worker
        start_audit(env, work, "soak")
        deadline = time.time() + 90
        while faust_ready_at(worker.log_path) is None:
            if worker.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"worker did not start: {worker.tail()}")
            await asyncio.sleep(0.5)
        probe = Probe(env, titles_expected=0)
        # The catalog load's events must all be durable before the baseline
        # is taken; those still in flight would count as live events done.
        base_done = await settled_done(probe)
        print(f"soak: producing {count} events at {args.rate}/s for {args.minutes} min ...",
              flush=True)
        summary_path = work / "soak-summary.json"
        started = time.time()
        producer = start_producer(env, count, args.rate, 31, summary_path)
        done_samples: List[Tuple[float, int]] = []
        try:
            while producer.poll() is None:
                if worker.proc.poll() is not None:
                    raise RuntimeError(f"worker exited: {worker.tail()}")
                now = time.time()
                series.append((now - started, rss_mb(worker.proc.pid)))
                if len(series) % 6 == 0:  # every 30 s: events durable so far, table state
                    done_samples.append((now - started, (await probe.counts())["done"] - base_done))
                    state.append((now - started, dir_mb(work / "soak-data"),
                                  *await changelog_size(env)))
                await asyncio.sleep(5.0)
        finally:
            await probe.close()
            if producer.poll() is None:  # stopped early: the producer must not go on
                producer.kill()
                producer.wait()
        if producer.returncode != 0:
            raise RuntimeError("soak producer failed")
        produced = json.loads(summary_path.read_text())
        # Catalog events are not in the probe's count (it counts titles only once).
        share = 1.0 - produced["per_topic"].get("catalog", 0) / max(produced["events"], 1)
        lag_samples = [(round(t, 1), int(produced["rate"] * t * share) - done)
                       for t, done in done_samples]
        end = series[-1][0] if series else 0.0
        warm = window_median(series, 60, 120)
        half = window_median(series, end / 2 - 30, end / 2 + 30)
        last = window_median(series, end - 60, end + 1)
        growth = growth_pct(warm, last)
        second_half = growth_pct(half, last)
        behind = [lag for _, lag in lag_samples[-4:]]
        result = {
            "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": f"make soak (python -m tests.system.soak --minutes {args.minutes}"
                       f" --rate {args.rate})",
            "machine": machine_info(),
            "what": ("faust -A streamapp worker next to python -m streamapp.audit; live events"
                     " at a steady rate after a 3,000-event catalog load"),
            "minutes": args.minutes, "rate_events_per_s": args.rate,
            "produced": produced["events"], "produced_events_per_s": produced["rate"],
            "worker_env": extra_env(args.env), "probe": bool(args.probe),
            "allocator": with_jemalloc(env).get("LD_PRELOAD") or "glibc malloc",
            "rss_start_mb": round(warm, 1),
            "rss_half_mb": round(half, 1),
            "rss_end_mb": round(last, 1),
            "rss_growth_pct": growth,
            "rss_growth_pct_second_half": second_half,
            "rss_mb_peak": round(max(mb for _, mb in series), 1) if series else None,
            "rss_measured": ("medians of the worker's RSS (process and children, every 5 s):"
                             " start = minute 2 (minute 1 is warm-up), half = the minute"
                             " around half time, end = the last minute"),
            "flat_within_pct": 100 * FLAT_WITHIN,
            "flat": second_half is not None and second_half <= 100 * FLAT_WITHIN,
            "events_behind_producer_every_30s": lag_samples,
            "kept_up": bool(behind) and max(behind) < args.rate * 5,
            "kept_up_measured": ("produced so far minus durable (PostgreSQL ledger, Redis rating"
                                 " and session counts) in the last two minutes: under five"
                                 " seconds' worth of events"),
            "rocksdb_mb_start": round(state[0][1], 2) if state else None,
            "rocksdb_mb_end": round(state[-1][1], 2) if state else None,
            "rocksdb_mb_peak": round(max(s[1] for s in state), 2) if state else None,
            "changelog_records_end": state[-1][2] if state else None,
            "changelog_mb_end": round(state[-1][3], 2) if state else None,
            "changelog_mb_peak": round(max(s[3] for s in state), 2) if state else None,
            "table_state_measured": ("every 30 s: size of the worker's RocksDB files (all"
                                     " partitions of the rating table), records in the"
                                     " table's changelog topic (end minus start offsets) and"
                                     " its size on the broker (DescribeLogDirs)"),
            "table_state_columns": ["t_s", "rocksdb_mb", "changelog_records", "changelog_mb"],
            "table_state_every_30s": [[round(t, 1), round(mb, 2), n, round(cmb, 2)]
                                      for t, mb, n, cmb in state],
            "rss_mb_every_5s": [[round(t, 1), round(mb, 1)] for t, mb in series],
        }
    finally:
        stop_worker("soak")
        await drop_namespaces([tag])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not result:  # the run failed; the error is on its way up
        return 1
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    draw(result, out / "soak.png")
    print(f"soak: RSS {result['rss_start_mb']} MB (minute 2) -> {result['rss_half_mb']} MB"
          f" (half time) -> {result['rss_end_mb']} MB (last minute): growth"
          f" {result['rss_growth_pct']:+.2f} %, second half {result['rss_growth_pct_second_half']:+.2f} %,"
          f" flat={result['flat']}, kept_up={result['kept_up']}", flush=True)
    return 0 if result["flat"] and result["kept_up"] else 1


def draw(result: dict, path: Path) -> None:
    """RSS over the run (with the flat band around half time), and the table's state."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, state_ax) = plt.subplots(2, 1, figsize=(10, 6), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 2]})
    points = result["rss_mb_every_5s"]
    ax.plot([t / 60 for t, _ in points], [mb for _, mb in points], label="worker RSS (MB)")
    half = result["rss_half_mb"]
    ax.axhspan(half * (1 - FLAT_WITHIN), half * (1 + FLAT_WITHIN), alpha=0.15,
               label=f"half-time median ±{100 * FLAT_WITHIN:g} %")
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.set_title(f"make soak: {result['rate_events_per_s']} events/s for {result['minutes']:g}"
                 f" min, RSS {result['rss_growth_pct']:+.1f} % overall,"
                 f" {result['rss_growth_pct_second_half']:+.1f} % in the second half")
    ax.legend(loc="lower right")
    state = result["table_state_every_30s"]
    minutes = [row[0] / 60 for row in state]
    state_ax.plot(minutes, [row[1] for row in state], color="tab:green",
                  label="RocksDB files, worker (MB)")
    state_ax.plot(minutes, [row[3] for row in state], color="tab:red",
                  label="changelog on the broker (MB)")
    state_ax.set_ylabel("MB")
    state_ax.set_ylim(bottom=0)
    records_ax = state_ax.twinx()
    records_ax.plot(minutes, [row[2] / 1000 for row in state], color="tab:orange",
                    linestyle="--", label="changelog offsets (thousands)")
    records_ax.set_ylabel("changelog offsets (k)")
    records_ax.set_ylim(bottom=0)
    state_ax.set_xlabel("minutes")
    lines = state_ax.get_lines() + records_ax.get_lines()
    state_ax.legend(lines, [line.get_label() for line in lines], loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.system.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=500)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--probe", metavar="FILE", help="run the worker under tests.system.memprobe,"
                   " appending its samples to FILE")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set in the worker's environment (repeatable)")
    args = p.parse_args(argv)
    # SIGTERM (a stopped job, `kill`) leaves through the finally blocks, which
    # stop the worker and the producer, instead of leaving them running.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    lock = single_run_lock()
    if lock is None:
        print("soak: a benchmark is running on this machine (.stack/bench.lock)", flush=True)
        return 2
    try:
        return asyncio.run(soak(args))
    finally:
        lock.close()


if __name__ == "__main__":
    sys.exit(main())
