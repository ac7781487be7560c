"""The latency pass: new events produced into the running pipeline worker at half its
sustained rate; end-to-end latency from PostgreSQL and from the outcome messages."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from tests.harness import settings_for
from tests.system.bench.common import LATENCY_TARGET_S
from tests.system.bench.measure import CpuAccount, Probe, Sampler
from tests.system.bench.numbers import account_events, percentiles
from tests.system.bench.procs import Process
from tests.system.bench.producer import start_producer
from tests.system.bench.topics import OutcomeWatcher, wait_for_audit


async def pass_latency(env: Dict[str, str], worker: Process, events_per_s: float,
                       seconds: float, seed: int, work: Path, audit_wait: float) -> dict:
    """Produce at ``events_per_s`` into the running pipeline; latency from PostgreSQL."""
    audit = await wait_for_audit(env, worker, audit_wait)
    target = max(10, int(round(events_per_s)))
    count = int(target * seconds)
    probe = Probe(env)
    watcher = OutcomeWatcher(settings_for(env))
    await watcher.start()
    sampler = Sampler(worker.proc.pid).start()
    cpu = CpuAccount(worker.proc.pid).start()
    summary_path = work / "latency-summary.json"
    started = time.time()
    producer = start_producer(env, count, target, seed, summary_path)
    try:
        while producer.poll() is None:
            if worker.proc.poll() is not None:
                raise RuntimeError(f"worker exited during the latency pass: {worker.tail()}")
            await asyncio.sleep(0.25)
            if time.time() - started > seconds * 3 + 30:
                raise TimeoutError("latency producer did not finish")
        if producer.returncode != 0:
            raise RuntimeError("latency producer failed")
        produced_at = time.time()
        summary = json.loads(summary_path.read_text())
        while time.time() - produced_at < 20 and len(watcher.done) < summary["valid"]:
            await asyncio.sleep(0.25)
        await asyncio.sleep(1.0)  # the last batches' later stores
        ended = time.time()
        usage = cpu.stop()
        rows = await probe.pg(
            "SELECT extract(epoch FROM occurred_at)::float8 AS t,"
            " extract(epoch FROM applied_at - occurred_at)::float8 AS lat"
            " FROM applied_events WHERE occurred_at >= to_timestamp($1) ORDER BY occurred_at",
            started)
    finally:
        if producer.poll() is None:
            producer.terminate()
            producer.wait(10)
        await sampler.stop()
        await watcher.stop()
        await probe.close()
    applied = [(r["t"], r["lat"]) for r in rows]
    return {**latency_report(target, summary, audit, applied, watcher, started, seconds),
            **sampler.report(started, ended),
            "cpu_cores_by_process": usage,
            **latency_series(applied, sorted(watcher.done.values()), started)}


def latency_report(target: int, summary: dict, audit: dict, applied: List[Tuple[float, float]],
                   watcher: OutcomeWatcher, started: float, seconds: float) -> dict:
    """The pass's percentiles: account events (PostgreSQL), every event, per store."""
    lat = percentiles([x for _, x in applied])
    all_kinds = percentiles([x for _, x in watcher.done.values()])
    per_store = {f"{stream}->{store}": percentiles([x for _, x in series])
                 for (stream, store), series in sorted(watcher.latency.items())}
    last_store = sorted(watcher.done.values())
    return {
        "what": ("new events produced into the running pipeline worker at half its sustained"
                 " rate (pass 'sustained'); occurred_at = wall clock at production; the"
                 " catalog is already loaded, so the mix is the simulator's steady state"),
        "target_events_per_s": target,
        "produced": summary["events"], "produced_events_per_s": summary["rate"],
        **audit,
        "per_topic": summary["per_topic"],
        "latency_s": lat,
        "latency_measured": ("PostgreSQL applied_events.applied_at - occurred_at for every"
                             " account event of this pass (applied_at is the write"
                             " transaction's start, a few ms before its commit)"),
        "p99_target_s": LATENCY_TARGET_S,
        "p99_under_target": bool(lat and lat["p99"] < LATENCY_TARGET_S),
        "latency_all_kinds_s": all_kinds,
        "latency_all_kinds_measured": ("every event, from occurred_at to the outcome message"
                                       " S2 sent after writing it to the last of its agent's"
                                       " stores (Kafka timestamp of that message)"),
        "all_kinds_p99_under_target": bool(all_kinds and all_kinds["p99"] < LATENCY_TARGET_S),
        "kept_up": kept_up(last_store, started, seconds),
        "kept_up_measured": ("median latency of the events of the pass's last quarter over"
                             " that of its first quarter; well above 1 means a backlog grew"),
        "latency_by_stream_and_store_s": per_store,
        "events_seen_durable": len(watcher.done), "events_expected": summary["valid"],
        "account_events_expected": account_events(summary), "account_events_seen": len(applied),
    }


def latency_series(applied: List[Tuple[float, float]], last_store: List[Tuple[float, float]],
                   started: float) -> dict:
    """Latency over the pass: per second for the JSON, every point for the chart."""
    return {
        "latency_per_second": {
            "columns": ["s since the pass started (by occurred_at)", "events",
                        "p50 s", "p99 s", "max s"],
            "account_events_postgres": per_second_latency(applied, started),
            "all_events_last_store": per_second_latency(last_store, started),
        },
        # Every point, for the chart only (not written to the JSON).
        "_points": {
            "account_events_postgres": [(t - started, x) for t, x in applied],
            "all_events_last_store": [(t - started, x) for t, x in last_store],
        },
    }


def kept_up(points: Sequence[Tuple[float, float]], start: float, seconds: float) -> dict:
    import numpy as np

    first = [x for t, x in points if t - start < seconds / 4]
    last = [x for t, x in points if t - start >= seconds * 3 / 4]
    if not first or not last:
        return {}
    a, b = float(np.median(first)), float(np.median(last))
    return {"median_first_quarter_s": round(a, 3), "median_last_quarter_s": round(b, 3),
            "growth": round(b / a, 2) if a > 0 else None}


def per_second_latency(points: Sequence[Tuple[float, float]], start: float) -> List[list]:
    """Latency percentiles of the events that occurred in each second."""
    import numpy as np

    buckets: Dict[int, List[float]] = {}
    for t, x in points:
        buckets.setdefault(int(t - start), []).append(x)
    return [[b, len(xs), round(float(np.percentile(xs, 50)), 3),
             round(float(np.percentile(xs, 99)), 3), round(max(xs), 3)]
            for b, xs in sorted(buckets.items())]
