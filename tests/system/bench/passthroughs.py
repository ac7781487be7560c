"""The two pass-throughs alone: Faust's (pass 2) and Quix Streams' (the peer).

    python -m tests.system.bench.passthroughs [--count N] [--seed S] [--rounds R]
                                              [--only-peer] [--json PATH] [--keep]

produces the fixed stream into a namespace of its own, runs the passes in
alternating rounds (pass 2, peer, pass 2, peer, ...) exactly as ``make
bench`` runs them, prints each rate and the medians, and deletes the
namespace.  It needs Kafka only (no stores, no pipeline pass), so it is
the quick way to compare the two on a shared machine.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Dict, List, Optional

from tests.harness import drop_namespaces, settings_for, simulate
from tests.system.bench.common import bench_env, machine_info
from tests.system.bench.passthrough import pass_passthrough
from tests.system.bench.peer import PEER, pass_peer_passthrough
from tests.system.bench.report import median_of, rounds, worker_us_per_event


async def compare(args: argparse.Namespace) -> dict:
    tag = f"{os.environ.get('TOPIC_PREFIX', 'bench')}{uuid.uuid4().hex[:6]}"
    base = bench_env(tag)
    work = Path(tempfile.mkdtemp(prefix="streamapp-passthroughs-"))
    passes: Dict[str, dict] = {}
    names = [PEER] if args.only_peer else ["passthrough", PEER]
    runs = {"passthrough": pass_passthrough, PEER: pass_peer_passthrough}
    loadavg = machine_info()["loadavg_at_start"]
    try:
        print(f"passthroughs: namespace {tag}; producing {args.count} events", flush=True)
        total = simulate(base, "--count", str(args.count), "--rate", "0", "--seed",
                         str(args.seed), summary=work / "summary.json")["events"]
        for round_ in range(1, args.rounds + 1):
            for name in names:
                key = name if round_ == args.rounds else f"{name}_{round_}"
                passes[key] = await runs[name](base, total, work, key)
                shown = {k: passes[key].get(k) for k in ("events_per_s", "seconds",
                                                         "peak_rss_mb", "cpu_cores_used")}
                print(f"passthroughs: {key}: {shown}", flush=True)
    finally:
        await drop_namespaces([tag])
        if args.keep:
            print(f"passthroughs: logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return {"events": total, "partitions": settings_for(base).topic_partitions,
            "loadavg_at_start": loadavg,
            **{f"{name}_events_per_s": rounds(passes, name) for name in names},
            **{f"median_{name}_events_per_s": median_of(rounds(passes, name)) for name in names},
            **{f"{name}_worker_cpu_us_per_event": worker_us_per_event(passes, name)
               for name in names},
            "passes": passes}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.system.bench.passthroughs",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=20_000, help="events in the fixed stream")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--only-peer", action="store_true", help="the Quix Streams pass only")
    p.add_argument("--json", help="write every pass's results here")
    p.add_argument("--keep", action="store_true", help="keep the logs")
    args = p.parse_args(argv)
    out = asyncio.run(compare(args))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print("passthroughs: " + json.dumps({k: v for k, v in out.items() if k != "passes"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
