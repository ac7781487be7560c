"""The live producer of the sustained and latency passes: the simulator in its steady state."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

from tests.harness import ROOT


def start_producer(env: Dict[str, str], count: int, rate: float, seed: int,
                   summary_path: Path) -> subprocess.Popen:
    """``produce_steady`` in a process of its own (the measured ones share the CPU)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.system.bench", "produce", "--count", str(count),
         "--rate", str(rate), "--seed", str(seed), "--summary-json", str(summary_path)],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL)


def produce_steady(args: argparse.Namespace) -> None:
    """The simulator's own producer loop, starting in its steady-state mix.

    Without ``--epoch`` the simulator stamps ``occurred_at`` with the wall
    clock at production, which is what latency is measured from.  A new
    simulated world would first upsert all 500 titles (a burst of catalog
    writes that a running platform does not see); the catalog is already
    loaded here by the fixed stream (same title ids), so the world starts
    with its titles live.  Everything else is the simulator's code.
    """
    import streamapp.simulator.__main__ as sim
    from streamapp.simulator.world import World

    class SteadyWorld(World):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.live_titles = list(self.titles)

    sim.World = SteadyWorld
    opts = sim.parse_args(["--count", str(args.count), "--rate", str(args.rate),
                           "--seed", str(args.seed), "--quiet"])
    summary = asyncio.run(sim.produce(opts))
    Path(args.summary_json).write_text(json.dumps(summary, indent=2) + "\n")
