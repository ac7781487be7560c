"""Pass 1, the ceiling: a bare aiokafka consumer that reads everything and does no work."""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path
from typing import Dict, List, Tuple

from tests.harness import free_port, settings_for
from tests.system.bench.common import STREAM_NAMES
from tests.system.bench.measure import CpuAccount, Sampler
from tests.system.bench.numbers import cumulative, summarise_progress
from tests.system.bench.procs import Process


async def ceiling_consumer(args: argparse.Namespace) -> None:
    """A bare aiokafka consumer in a fresh group: read everything, count it, nothing else."""
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

    from streamapp.config import settings
    from streamapp.connections import kafka_client_options

    assigned: List[float] = []

    class Listener(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked):
            pass

        async def on_partitions_assigned(self, tps):
            assigned.append(time.time())

    consumer = AIOKafkaConsumer(**kafka_client_options(settings, args.bootstrap), group_id=args.group,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    consumer.subscribe(args.topics.split(","), listener=Listener())
    await consumer.start()
    done: List[Tuple[float, int]] = []
    total = 0
    idle_since = time.monotonic()
    try:
        while total < args.total and time.monotonic() - idle_since < args.idle_timeout:
            batches = await consumer.getmany(timeout_ms=200)
            n = sum(len(records) for records in batches.values())
            if n:
                total += n
                done.append((time.time(), n))
                idle_since = time.monotonic()
    finally:
        await consumer.stop()
        Path(args.progress).write_text(json.dumps(
            {"assigned_at": assigned[0] if assigned else None, "batches": done,
             "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


async def pass_ceiling(env: Dict[str, str], total: int, work: Path) -> dict:
    cfg = settings_for(env)
    progress = work / "ceiling.json"
    proc = Process(env, work / "ceiling.log", [
        "-m", "tests.system.bench", "ceiling", "--progress", str(progress),
        "--topics", ",".join(cfg.topic(n) for n in STREAM_NAMES),
        "--bootstrap", cfg.kafka_bootstrap, "--group", f"{cfg.app_id}-ceiling",
        "--total", str(total)], port=free_port())
    started = time.time()
    proc.start()
    sampler = Sampler(proc.proc.pid).start()
    cpu = CpuAccount(proc.proc.pid).start()
    try:
        while proc.proc.poll() is None:
            await asyncio.sleep(0.2)
            if time.time() - started > 120:
                raise TimeoutError("ceiling consumer did not finish in 120 s")
    finally:
        await sampler.stop()
        proc.stop()
    if proc.proc.returncode != 0:
        raise RuntimeError(f"ceiling consumer failed: {proc.tail()}")
    usage = cpu.stop()
    report = json.loads(progress.read_text())
    # The process may live less than one sampling interval: it reports its own peak.
    sampler.peak_rss = max(sampler.peak_rss, int(report.get("max_rss_bytes") or 0))
    return {**summarise_progress("ceiling", cumulative(report["batches"]), total, started,
                                 report["assigned_at"], "time its partitions were assigned",
                                 sampler, "bare aiokafka consumer (fresh group), no work"),
            "cpu_cores_by_process": usage}
