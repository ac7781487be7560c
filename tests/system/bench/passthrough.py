"""Pass 2, the pass-through: a real Faust worker on the same topics, batching, no work.

``watch_progress`` also runs the peer pass (``peer``), so both are timed alike."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Callable, Dict, Optional

from tests.harness import free_port
from tests.system.bench.common import Timeline, faust_ready_at
from tests.system.bench.measure import CpuAccount, Sampler
from tests.system.bench.numbers import cumulative, summarise_progress
from tests.system.bench.procs import Process


def read_progress(path: Path) -> Timeline:
    """The pass-through's ``<time> <events>`` lines → cumulative timeline."""
    batches = []
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                batches.append((float(parts[0]), int(parts[1])))
    return cumulative(batches)


async def pass_passthrough(env: Dict[str, str], total: int, work: Path,
                           name: str = "passthrough") -> dict:
    progress = work / f"{name}.progress"
    env = {**env, "BENCH_PROGRESS_FILE": str(progress),
           "STREAMAPP_ID": f"{env['STREAMAPP_ID']}-{name}",
           "STREAMAPP_DATA_DIR": str(work / f"{name}-data")}
    proc = Process(env, work / f"{name}.log",
                   ["-m", "faust", "-A", "tests.system.passthrough_app", "worker", "-l", "info"],
                   port=free_port())
    return await watch_progress(
        "passthrough", proc, progress, total, faust_ready_at,
        "the worker's 'Ready' log line (fetcher started)",
        "faust -A tests.system.passthrough_app worker: same topics, take_events, no work")


async def watch_progress(name: str, proc: Process, progress: Path, total: int,
                         ready_at: Callable[[Path], Optional[float]], ready_means: str,
                         what: str) -> dict:
    """Start ``proc``, which appends ``<time> <events>`` lines to ``progress``,
    and stop it once it has done ``total`` events; timed from ``ready_at``
    (a time read from its log) to the last event, CPU over that part only."""
    started = time.time()
    proc.start()
    sampler = Sampler(proc.proc.pid).start()
    cpu = CpuAccount(proc.proc.pid).start()
    timing = False
    try:
        while True:
            await asyncio.sleep(0.25)
            if not timing and ready_at(proc.log_path) is not None:
                cpu.start()  # account for the timed part only, not start-up
                timing = True
            timeline = read_progress(progress)
            if timeline and timeline[-1][1] >= total:
                break
            if proc.proc.poll() is not None:
                raise RuntimeError(f"{name} process exited: {proc.tail()}")
            if time.time() - started > 120:
                raise TimeoutError(f"{name} read {timeline[-1][1] if timeline else 0}"
                                   f" of {total} in 120 s")
        usage = cpu.stop()
    finally:
        await sampler.stop()
        proc.stop()
    return {**summarise_progress(name, timeline, total, started, ready_at(proc.log_path),
                                 ready_means, sampler, what),
            "cpu_cores_by_process": usage}
