"""``python -m tests.system.bench``: the options, and the two internal subcommands
(``ceiling`` and ``produce``) that passes run in processes of their own."""
from __future__ import annotations

import argparse
import asyncio
from typing import List, Optional

from tests.system.bench.ceiling import ceiling_consumer
from tests.system.bench.common import RESULTS
from tests.system.bench.producer import produce_steady
from tests.system.bench.run import PASSES, run


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "ceiling":
        asyncio.run(ceiling_consumer(args))
        return 0
    if args.cmd == "produce":
        produce_steady(args)
        return 0
    return asyncio.run(run(args))


def parser() -> argparse.ArgumentParser:
    from tests.system import bench  # the package's docstring is the help text

    p = argparse.ArgumentParser(prog="python -m tests.system.bench", description=bench.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", metavar="(internal: ceiling | produce)")
    p.add_argument("--count", type=int, default=20_000, help="events in the fixed stream")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--per-event-budget", type=float, default=40.0,
                   help="seconds the BATCH_SIZE=1 pass runs (default 40)")
    p.add_argument("--sustained-seconds", type=float, default=15.0,
                   help="length of the live-producer pass that finds the sustained rate")
    p.add_argument("--latency-seconds", type=float, default=20.0,
                   help="length of the latency pass (default 20; 0 skips it)")
    p.add_argument("--timeout", type=float, default=150.0,
                   help="longest wait for the full pipeline to be durable (default 150)")
    p.add_argument("--max-seconds", type=float, default=270.0,
                   help="time limit of the whole run; the pipeline pass is cut short (and"
                        " its rate taken from what is durable) to stay within it")
    p.add_argument("--profile", action="store_true",
                   help="only the pipeline pass, its worker under pyinstrument")
    p.add_argument("--keep", action="store_true", help="keep worker logs")
    p.add_argument("--pin-worker", action="store_true",
                   help="run each pass's worker on a core of its own, the stack on the"
                        " others (as when they are separate machines); results go to"
                        " pinned.json")
    p.add_argument("--passes", default=",".join(PASSES), type=lambda v: set(v.split(",")),
                   help="comma-separated subset of %(default)s, for experiments; results of a "
                        "subset go to partial.json (pipeline always runs; 'sustained' also "
                        "runs the latency pass)")
    p.add_argument("--repeats", type=int, default=5,
                   help="rounds of passes 2, peer and 3, alternating; ratios use the median"
                        " rate of each (default 5)")
    p.add_argument("--compare-mongodb", default="", metavar="SERVERS",
                   type=lambda v: [f for f in v.split(",") if f],
                   help="comma-separated MongoDB servers (ferretdb, secantus, mongod) to compare"
                        " with the stack's: each is started on a free port, then pass 3 and the"
                        " title pass run on each in alternating rounds (mongodb_comparison)")
    p.add_argument("--compare-rounds", type=int, default=3,
                   help="rounds of pass 3 per server for --compare-mongodb (default 3)")
    p.add_argument("--out", default=str(RESULTS))

    c = sub.add_parser("ceiling", help=argparse.SUPPRESS)
    c.add_argument("--progress", required=True)
    c.add_argument("--topics", required=True)
    c.add_argument("--bootstrap", required=True)
    c.add_argument("--group", required=True)
    c.add_argument("--total", type=int, required=True)
    c.add_argument("--idle-timeout", type=float, default=30.0)

    g = sub.add_parser("produce", help=argparse.SUPPRESS)
    g.add_argument("--count", type=int, required=True)
    g.add_argument("--rate", type=float, required=True)
    g.add_argument("--seed", type=int, required=True)
    g.add_argument("--summary-json", required=True)
    return p
