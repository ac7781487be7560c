"""The benchmark's peer pass: a Quix Streams pass-through, measured like Faust's.

Pass 2 (``passthrough``) tells what Faust itself costs.  This pass tells
what the tool a user would pick instead costs for the same job: Quix
Streams (``tests.system.peer_passthrough_app``) reads the same preloaded
topics and partitions from the beginning in a fresh consumer group, decodes
each value as JSON and produces it to an output topic of the pass's own.
It is timed like pass 2: from the log line that says its consumer could
start reading (its first partitions assigned; Faust's 'Ready' comes right
after its first assignment) to the moment the last event was processed,
with the same CPU and memory sampling.

    python -m tests.system.peer [--count N] [--seed S] [--rounds R] [--faust]

runs it on its own: produces the events into a new namespace, runs the peer
pass (and, with ``--faust``, pass 2 before it, alternating, ``--rounds``
times), prints each rate and the medians, and deletes the namespace.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Callable, Dict, List, Optional

from tests.harness import drop_namespaces, settings_for, simulate
from tests.system.bench import (
    STREAM_NAMES,
    CpuAccount,
    Process,
    Sampler,
    bench_env,
    pass_passthrough,
    ratio,
    read_progress,
    summarise_progress,
)
from tests.system.peer_passthrough_app import ASSIGNED

PASS = "peer_passthrough"


def logged_at(log_path: Path, marker: str) -> Optional[float]:
    """Unix time of the first log line holding ``marker`` (Faust and Quix
    Streams both start their lines with ``[YYYY-mm-dd HH:MM:SS,mmm]``, local time)."""
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


async def watch_progress(name: str, proc: Process, progress: Path, total: int,
                         ready_at: Callable[[Path], Optional[float]], ready_means: str,
                         what: str, limit_s: float = 120.0) -> dict:
    """Start ``proc``, which appends ``<time> <events>`` lines to ``progress``;
    wait until it has done ``total`` events; its rate from ``ready_at``."""
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
                raise RuntimeError(f"{name} exited: {proc.tail()}")
            if time.time() - started > limit_s:
                raise TimeoutError(f"{name} read {timeline[-1][1] if timeline else 0}"
                                   f" of {total} in {limit_s:.0f} s")
        usage = cpu.stop()
    finally:
        await sampler.stop()
        proc.stop()
    return {**summarise_progress(name, timeline, total, started, ready_at(proc.log_path),
                                 ready_means, sampler, what),
            "cpu_cores_by_process": usage}


async def pass_peer_passthrough(env: Dict[str, str], total: int, work: Path,
                                name: str = PASS) -> dict:
    """Quix Streams over the bench's topics: fresh group, own output topic."""
    from streamapp.tally import topic_size

    cfg = settings_for(env)
    progress = work / f"{name}.progress"
    proc = Process(env, work / f"{name}.log", [
        "-m", "tests.system.peer_passthrough_app", "--bootstrap", cfg.kafka_bootstrap,
        "--group", f"{cfg.app_id}-{name}",
        "--topics", ",".join(cfg.topic(n) for n in STREAM_NAMES),
        "--output", cfg.topic(name), "--partitions", str(cfg.topic_partitions),
        "--progress", str(progress), "--state-dir", str(work / f"{name}-state")], port=0)
    result = await watch_progress(
        name, proc, progress, total, lambda log: logged_at(log, ASSIGNED),
        "the log line the app writes once its first partitions are assigned",
        "Quix Streams (tests.system.peer_passthrough_app): same topics, JSON decode,"
        " produce to a topic of its own, commit")
    # Stopped (SIGTERM) means its last checkpoint flushed the producer: every
    # event should be in the output topic.
    return {**result, "output_messages": await topic_size(cfg.topic(name), cfg.kafka_bootstrap, cfg),
        "settings": {"processing_guarantee": "at-least-once", "commit_interval_s": 5.0,
                     "auto_offset_reset": "earliest", "acks": "all",
                     "enable.idempotence": True, "output_partitions": cfg.topic_partitions}}


def median_rate(passes: Dict[str, dict], name: str) -> Optional[float]:
    """Median ``events_per_s`` over a pass's rounds (``name_1``, ... and ``name``);
    None if any round has none."""
    rates = [(p or {}).get("events_per_s") for k, p in passes.items()
             if k == name or (k.startswith(f"{name}_") and k.rsplit("_", 1)[1].isdigit())]
    if not rates or None in rates:
        return None
    return round(statistics.median(rates), 1)


def peer_keys(passes: Dict[str, dict], pipeline_rate: Optional[float]) -> dict:
    """``latest.json``'s top-level keys for the peer: its rate (median of its
    rounds) and the full pipeline's rate over it."""
    peer = median_rate(passes, PASS)
    return {"peer_passthrough_events_per_s": peer,
            "ratio_vs_peer_passthrough": ratio(pipeline_rate, peer)}


# --- on its own --------------------------------------------------------------------------

async def standalone(args: argparse.Namespace) -> int:
    tag = f"{os.environ.get('TOPIC_PREFIX', 'bench')}{uuid.uuid4().hex[:6]}"
    base = bench_env(tag)
    work = Path(tempfile.mkdtemp(prefix="streamapp-peer-"))
    passes: Dict[str, dict] = {}
    try:
        print(f"peer: namespace {tag}; producing {args.count} events (seed {args.seed})",
              flush=True)
        summary = simulate(base, "--count", str(args.count), "--rate", "0",
                           "--seed", str(args.seed), summary=work / "summary.json")
        total = summary["events"]
        for r in range(1, args.rounds + 1):
            suffix = f"_{r}" if r < args.rounds else ""
            runs = [("passthrough", pass_passthrough)] if args.faust else []
            runs.append((PASS, pass_peer_passthrough))
            for name, run in runs:
                result = await run(base, total, work, name + suffix)
                passes[name + suffix] = result
                shown = {k: result.get(k) for k in ("events", "events_per_s", "seconds",
                                                     "peak_rss_mb", "cpu_cores_used")}
                print(f"peer: {name + suffix}: {shown}", flush=True)
    finally:
        await drop_namespaces([tag])
    out = {"events": total, "partitions": settings_for(base).topic_partitions,
           "peer_passthrough_events_per_s": median_rate(passes, PASS),
           "passthrough_events_per_s": median_rate(passes, "passthrough") if args.faust else None,
           "passes": passes}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(f"peer: median rates: Quix pass-through {out['peer_passthrough_events_per_s']}/s,"
          f" Faust pass-through {out['passthrough_events_per_s']}/s", flush=True)
    if args.keep:
        print(f"peer: logs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.system.peer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=20_000, help="events in the fixed stream")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--faust", action="store_true",
                   help="also run the Faust pass-through, before the peer in each round")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--keep", action="store_true", help="keep the logs")
    return asyncio.run(standalone(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
