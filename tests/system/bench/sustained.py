"""The sustained rate: events produced live into the running pipeline worker at the
backlog rate, and the rate they become durable once the pass is under way."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tests.system.bench.measure import CpuAccount, Probe
from tests.system.bench.procs import Process
from tests.system.bench.producer import start_producer


def counted(c: Dict[str, int]) -> int:
    """Events the sustained pass counts: all but the catalog's (titles are upserts)."""
    return c["accounts"] + c["ratings"] + c["sessions"]


async def pass_sustained(env: Dict[str, str], worker: Process, events_per_s: float,
                         seconds: float, seed: int, work: Path) -> dict:
    """The rate the running pipeline keeps up with while producers are live.

    Draining a backlog (pass 3) leaves the machine to the pipeline alone; live
    producers, Kafka's appends and the audit trail share it in steady state,
    and batches are smaller.  Produce at the backlog rate and measure how fast
    events become durable once the pass is under way.
    """
    target = max(10, int(round(events_per_s)))
    count = int(target * seconds)
    probe = Probe(env)
    summary_path = work / "sustained-summary.json"
    points: List[Tuple[float, int]] = []
    cpu = CpuAccount(worker.proc.pid).start()
    started = time.time()
    producer = start_producer(env, count, target, seed, summary_path)
    try:
        base = counted(await probe.counts())
        while producer.poll() is None:
            if worker.proc.poll() is not None:
                raise RuntimeError(f"worker exited during the sustained pass: {worker.tail()}")
            if time.time() - started > seconds * 3 + 30:
                raise TimeoutError("sustained-pass producer did not finish")
            points.append((time.time(), counted(await probe.counts()) - base))
            await asyncio.sleep(0.5)
        produced_at = time.time()
        summary = json.loads(summary_path.read_text())
        share = 1.0 - summary["per_topic"].get("catalog", 0) / max(summary["events"], 1)
        expected = int(summary["valid"] * share)
        usage = cpu.stop()
        # Let the backlog drain before the next pass.
        done = points[-1][1] if points else 0
        while done < expected and time.time() - produced_at < 60:
            await asyncio.sleep(0.5)
            done = counted(await probe.counts()) - base
        drained_after = round(time.time() - produced_at, 1)
    finally:
        if producer.poll() is None:
            producer.terminate()
            producer.wait(10)
        await probe.close()
    window = [(t, n) for t, n in points if t - started >= seconds * 0.3]
    durable_rate = None
    if len(window) >= 2 and window[-1][0] > window[0][0]:
        durable_rate = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]) / share
    return sustained_report(summary, durable_rate, drained_after, usage)


def sustained_report(summary: dict, durable_rate: Optional[float], drained_after: float,
                     usage: dict) -> dict:
    produced_rate = summary["rate"]
    sustained = min(produced_rate, durable_rate) if durable_rate else None
    return {
        "what": ("events produced live into the running pipeline at the backlog rate;"
                 " the rate they became durable after the first 30% of the pass"),
        "produced": summary["events"], "produced_events_per_s": produced_rate,
        "durable_events_per_s": round(durable_rate, 1) if durable_rate else None,
        "events_per_s": round(sustained, 1) if sustained else None,
        "kept_up_with_producers": bool(durable_rate and durable_rate >= 0.95 * produced_rate),
        "backlog_drained_after_s": drained_after,
        "rate_measured": ("account events in PostgreSQL's ledger plus rating and session events"
                          " counted in Redis, per second over the pass's last 70%, scaled to all"
                          " events by the catalog's share; at most the produced rate"),
        "cpu_cores_by_process": usage,
    }
