"""``make soak``: is the worker's memory flat over a long steady run?

Runs the pipeline as deployed (``faust -A streamapp worker`` next to
``python -m streamapp.audit``) in a namespace of its own, loads the catalog
with a short fixed stream, then produces live events at a steady rate
(default 500/s, about half the sustained rate ``make bench`` measures here)
for ``--minutes`` (default 10).  The worker's resident memory (process and
children) is sampled every 5 s.

Flat means: the median RSS of the last minute is within 10 % of the median
of the second minute (the first minute is warm-up: tables, caches, pools
and buffers fill).  Results go to ``bench/results/soak.json`` and
``soak.png``; the command exits non-zero if memory was not flat or the
worker fell behind the producer.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Tuple

import psutil

from tests.harness import drop_namespaces, reset_stores, simulate
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
    start_worker,
    stop_worker,
    tree_usage,
)

FLAT_WITHIN = 0.10


def rss_mb(pid: int) -> float:
    try:
        usage = tree_usage(psutil.Process(pid))
    except psutil.Error:
        return 0.0
    return usage[0] / 2**20 if usage else 0.0


def window_median(series: List[Tuple[float, float]], start: float, end: float) -> float:
    values = [mb for t, mb in series if start <= t < end]
    return statistics.median(values) if values else 0.0


async def soak(args: argparse.Namespace) -> int:
    tag = f"soak{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="streamapp-soak-"))
    base = bench_env(tag)
    seconds = args.minutes * 60
    count = int(args.rate * seconds)
    series: List[Tuple[float, float]] = []
    result: dict = {}
    try:
        await reset_stores(base)
        print(f"soak: namespace {tag}; loading the catalog ...", flush=True)
        simulate(base, "--count", "3000", "--rate", "0", "--seed", "5",
                 summary=work / "catalog-summary.json")
        env = pipeline_env(base, tag, "soak", work)
        worker = start_worker(env, work, "soak")
        RUNNING["soak"] = worker
        start_audit(env, work, "soak")
        deadline = time.time() + 90
        while faust_ready_at(worker.log_path) is None:
            if worker.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"worker did not start: {worker.tail()}")
            await asyncio.sleep(0.5)
        print(f"soak: producing {count} events at {args.rate}/s for {args.minutes} min ...",
              flush=True)
        summary_path = work / "soak-summary.json"
        started = time.time()
        producer = start_producer(env, count, args.rate, 31, summary_path)
        probe = Probe(env, titles_expected=0)
        done_samples: List[Tuple[float, int]] = []
        base_done = (await probe.counts())["done"]
        try:
            while producer.poll() is None:
                if worker.proc.poll() is not None:
                    raise RuntimeError(f"worker exited: {worker.tail()}")
                now = time.time()
                series.append((now - started, rss_mb(worker.proc.pid)))
                if len(series) % 6 == 0:  # every 30 s: events durable so far
                    done_samples.append((now - started, (await probe.counts())["done"] - base_done))
                await asyncio.sleep(5.0)
        finally:
            await probe.close()
        if producer.returncode != 0:
            raise RuntimeError("soak producer failed")
        produced = json.loads(summary_path.read_text())
        # Catalog events are not in the probe's count (it counts titles only once).
        share = 1.0 - produced["per_topic"].get("catalog", 0) / max(produced["events"], 1)
        lag_samples = [(round(t, 1), int(produced["rate"] * t * share) - done)
                       for t, done in done_samples]
        end = series[-1][0] if series else 0.0
        warm = window_median(series, 60, 120)
        last = window_median(series, end - 60, end + 1)
        growth = (last - warm) / warm if warm else None
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
            "rss_mb_second_minute_median": round(warm, 1),
            "rss_mb_last_minute_median": round(last, 1),
            "rss_mb_peak": round(max(mb for _, mb in series), 1) if series else None,
            "rss_growth": round(growth, 4) if growth is not None else None,
            "flat_within": FLAT_WITHIN,
            "flat": growth is not None and abs(growth) <= FLAT_WITHIN,
            "events_behind_producer_every_30s": lag_samples,
            "kept_up": bool(behind) and max(behind) < args.rate * 5,
            "kept_up_measured": ("produced so far minus durable (PostgreSQL ledger, Redis rating"
                                 " and session counts) in the last two minutes: under five"
                                 " seconds' worth of events"),
            "rss_mb_every_5s": [[round(t, 1), round(mb, 1)] for t, mb in series],
        }
    finally:
        stop_worker("soak")
        await drop_namespaces([tag])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    draw(result, out / "soak.png")
    print(f"soak: RSS {result['rss_mb_second_minute_median']} MB (minute 2) -> "
          f"{result['rss_mb_last_minute_median']} MB (last minute), growth "
          f"{result['rss_growth']:+.1%}, flat={result['flat']}, kept_up={result['kept_up']}",
          flush=True)
    return 0 if result["flat"] and result["kept_up"] else 1


def draw(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    points = result["rss_mb_every_5s"]
    ax.plot([t / 60 for t, _ in points], [mb for _, mb in points], label="worker RSS (MB)")
    warm = result["rss_mb_second_minute_median"]
    ax.axhspan(warm * (1 - FLAT_WITHIN), warm * (1 + FLAT_WITHIN), alpha=0.15,
               label="second-minute median ±10 %")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.set_title(f"make soak: {result['rate_events_per_s']} events/s for "
                 f"{result['minutes']} min, RSS growth {result['rss_growth']:+.1%}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.system.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=500)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
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
