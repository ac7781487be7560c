"""S1, the simulator: ``python -m streamapp.simulator --help``.

Feeds the typed topics with a believable stream (see ``world.py``), or with
a recording (``--replay``, see ``replay.py``), shows a progress bar with the
live rate, and prints a summary of what it produced, which is also what the
stores should hold afterwards (``--summary-json``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from datetime import datetime
from typing import BinaryIO, List, Optional, Union

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from tqdm import tqdm

from ..config import Settings, settings
from ..connections import kafka_client_options
from ..topics import STREAMS, event_topic_config, event_topic_names, output_topic_names
from .profiles import PROFILES
from .replay import Replay
from .world import World

#: Events per second of event time at intensity 1 (10 ms each): ``--rate``
#: paces the world's event time, so a busy hour is sent faster.
NOMINAL_RATE = 100.0


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m streamapp.simulator", description=__doc__)
    p.add_argument("--count", type=int, default=None,
                   help="events to produce; 0 runs until stopped "
                        "(default 10000; with --replay, the whole file)")
    p.add_argument("--rate", type=float, default=None,
                   help="events per second; 0 = as fast as possible "
                        "(default: 0 with a --count, 200 when --count 0)")
    p.add_argument("--seed", type=int, default=1, help="same seed, same events (default 1)")
    p.add_argument("--users", type=int, default=2_000, help="users in the world (default 2000)")
    p.add_argument("--titles", type=int, default=500, help="titles in the catalog (default 500)")
    p.add_argument("--bad-share", type=float, default=0.0,
                   help="share of deliberately bad events, e.g. 0.01 (default 0)")
    p.add_argument("--epoch", type=datetime.fromisoformat, default=None,
                   help="ISO time of the first event (default: now); fixes timestamps too")
    p.add_argument("--profile", choices=PROFILES, default="steady",
                   help="traffic over (world) time: steady (default), daily (evening peak, "
                        "quiet mornings), launch-spike (a blockbuster one world hour in)")
    p.add_argument("--speed", type=float, default=60.0,
                   help="world seconds per second of event time (default 60: sessions "
                        "last minutes of world time, a subscription is billed every 30 "
                        "world days, releases fade over world weeks)")
    p.add_argument("--record", default=None, metavar="FILE",
                   help="also write every produced value to FILE, one JSON line each")
    p.add_argument("--replay", default=None, metavar="FILE",
                   help="produce the JSON lines of FILE (a --record file, or events in the "
                        "contract's wire form) instead of simulating")
    p.add_argument("--dry-run", action="store_true",
                   help="no Kafka: only --record and the summary")
    p.add_argument("--summary-json", default=None, help="also write the summary to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.count is None:
        args.count = 0 if args.replay else 10_000
    if args.rate is None:
        args.rate = 200.0 if args.count == 0 and not args.replay else 0.0
    return args


async def ensure_topics(cfg: Settings = settings) -> None:
    """Create our topics with the configured partition count if missing."""
    admin = AIOKafkaAdminClient(**kafka_client_options(cfg))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        events, outputs = event_topic_names(cfg), output_topic_names(cfg)
        missing = [NewTopic(n, cfg.topic_partitions, cfg.topic_replicas,
                            topic_configs=event_topic_config(cfg) if n in events else {})
                   for n in events + outputs if n not in existing]
        if missing:
            await admin.create_topics(missing)
    finally:
        await admin.close()


def source(args: argparse.Namespace, replay_fh: Optional[BinaryIO]) -> Union[World, Replay]:
    if replay_fh is not None:
        return Replay(replay_fh)
    return World(args.seed, args.users, args.titles, args.bad_share, args.epoch,
                 profile=args.profile, speed=args.speed)


async def produce(args: argparse.Namespace) -> dict:
    if not args.dry_run:
        await ensure_topics()
    replay_fh = open(args.replay, "rb") if args.replay else None
    record_fh = open(args.record, "wb") if args.record else None
    world = source(args, replay_fh)
    producer = None
    if not args.dry_run:
        # Idempotent, acks=all, and patient: a broker that restarts mid-run
        # delays delivery (up to 5 minutes) instead of failing the run.
        producer = AIOKafkaProducer(**kafka_client_options(settings), acks="all",
                                    enable_idempotence=True, linger_ms=5,
                                    max_batch_size=256 * 1024, request_timeout_ms=300_000,
                                    retry_backoff_ms=500)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if producer is not None:
        await producer.start()
    bar = tqdm(total=args.count or None, unit="ev", disable=args.quiet, smoothing=0.1,
               dynamic_ncols=True)
    pending: list = []
    started = time.monotonic()
    try:
        for n, (stream, key, value, ts, _bad) in enumerate(world.events(args.count), 1):
            if stop.is_set():
                break
            if record_fh is not None:
                record_fh.write(value + b"\n")
            if producer is None:
                bar.update(1)
                continue
            pending.append(await producer.send(
                STREAMS[stream].topic_name, value=value, key=key,
                timestamp_ms=int(ts * 1000)))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                bar.update(len(pending))
                pending.clear()
            if args.rate:
                # The world's event time, or for a replay the count, sets the pace.
                due = (world.elapsed_s * NOMINAL_RATE if replay_fh is None else n) / args.rate
                ahead = due - (time.monotonic() - started)
                if ahead > 0:
                    if pending:
                        await asyncio.gather(*pending)
                        bar.update(len(pending))
                        pending.clear()
                    await asyncio.sleep(ahead)
        await asyncio.gather(*pending)
        bar.update(len(pending))
    finally:
        bar.close()
        if producer is not None:
            await producer.stop()
        for fh in (replay_fh, record_fh):
            if fh is not None:
                fh.close()
    summary = world.summary()
    summary["seconds"] = round(time.monotonic() - started, 2)
    summary["rate"] = round(summary["events"] / max(summary["seconds"], 1e-9), 1)
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    summary = asyncio.run(produce(args))
    text = json.dumps(summary, indent=2)
    print(text)
    if args.summary_json:
        with open(args.summary_json, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
