"""``make bench-scaling``: the full pipeline with 1 and 2 workers on the cluster
profile, in one run, and end-to-end latency through a broker kill.

The stack's cluster profile must be up (3 Kafka brokers, RF 3,
``min.insync.replicas=2``, a 6-node Redis Cluster, the shared PostgreSQL,
MongoDB and OpenSearch).  Everything shares this machine's cores, so the
numbers say how the pipeline scales *here*; ``cores`` in the results says
how much CPU each process had.

1. ``backlog``: one fixed stream (``--count``, default 12,000 events, seed 5)
   is produced once; then for 1 and for 2 workers a fresh deployment (its own
   consumer group, output topics, databases and Redis key prefix) reads it
   from the beginning.  Its rate is events / (time every store equals the
   simulator's summary - time every worker was ready).  S3 does not run in
   these passes (the audit trail is its own consumer group, scaled apart).
2. ``broker_kill``: two workers, the simulator producing at ``--rate``
   (default 300 events/s, wall-clock ``occurred_at``) for ``--seconds``; the
   broker leading most ratings partitions is killed with ``kill -9`` a third
   of the way in and restarted at two thirds.  Latency is PostgreSQL's
   ``applied_events.applied_at - occurred_at`` of every account event,
   reported overall and per 5-second bucket of ``occurred_at``.

Results: ``bench/results/scaling.json``.

    python -m tests.system.scaling [--count N] [--rate R] [--seconds S]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import (  # noqa: E402
    CREATED,
    ROOT,
    cluster_up,
    drop_namespaces,
    expected_vs_tally,
    isolated_env,
    reset_stores,
    settings_for,
    simulate,
    stack_module,
    stores_for,
)
from tests.system.chaos import WORK, start_simulator  # noqa: E402
from tests.system.cluster_chaos import Fleet, busiest_ratings_leader  # noqa: E402

stack = stack_module()
RESULTS = ROOT / "bench" / "results"
DATABASE = "streamapp_bench_scaling"


def say(message: str) -> None:
    print(f"scaling: {message}", file=sys.stderr, flush=True)


class Cpu:
    """CPU seconds of a set of processes (and their children) between two reads."""

    def __init__(self, pids: Dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.start = {name: self._seconds(p) for name, p in self.procs.items()}
        self.started = time.monotonic()

    @staticmethod
    def _seconds(proc: psutil.Process) -> float:
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def cores(self) -> Dict[str, float]:
        """Average cores each process used since the start."""
        wall = time.monotonic() - self.started
        return {name: round((self._seconds(p) - self.start[name]) / wall, 2)
                for name, p in self.procs.items()}


def server_pids() -> Dict[str, int]:
    """The cluster profile's servers and the shared stores, by name."""
    pids = {}
    for name in [*(n.name for n in stack.kafka_nodes()), *(n.name for n in stack.redis_nodes()),
                 "postgres", "mongodb", "opensearch"]:
        pid = stack.node(name).pid()
        if pid:
            pids[name] = pid
    return pids


def deployment_env(base: Dict[str, str], name: str) -> Dict[str, str]:
    """A fresh deployment over ``base``'s event topics: own group, outputs, prefix."""
    tag = base["TOPIC_PREFIX"]
    return {**base, "STREAMAPP_ID": f"streamapp-{tag}-{name}",
            "OUTPUT_TOPIC_PREFIX": f"{tag}.{name}", "AUDIT_INDEX_PREFIX": f"{tag}-{name}-audit",
            "AUDIT_IN_WORKER": "false", "REDIS_KEY_PREFIX": f"{tag}-{name}:",
            "STREAMAPP_DATA_DIR": str(WORK / f"{name}-data")}


async def backlog_pass(base: Dict[str, str], summary: dict, workers: int,
                       timeout: float) -> dict:
    name = f"backlog{workers}"
    env = deployment_env(base, name)
    await reset_stores(env)
    stores, cfg = stores_for(env), settings_for(env)
    fleet = Fleet(env, name)
    started = time.monotonic()
    try:
        fleet.start(*range(workers))
        ready = time.monotonic()
        cpu = Cpu({**{f"worker-{i}": w.proc.pid for i, w in fleet.workers.items()},
                   **server_pids()})
        from streamapp.tally import tally
        while True:
            if not expected_vs_tally(summary, await tally(stores, cfg)):
                break
            if time.monotonic() - ready > timeout:
                raise RuntimeError(f"{name}: not complete after {timeout:.0f} s")
            await asyncio.sleep(0.5)
        seconds = time.monotonic() - ready
        cores = cpu.cores()
    finally:
        fleet.stop_all()
        await stores.close()
    worker_cores = sum(v for k, v in cores.items() if k.startswith("worker-"))
    result = {"workers": workers, "events": summary["events"],
              "seconds": round(seconds, 2), "events_per_s": round(summary["events"] / seconds),
              "startup_s": round(ready - started, 1), "cores": cores,
              "worker_cores": round(worker_cores, 2),
              "events_per_worker_core_s": round(summary["events"] / seconds / worker_cores)
              if worker_cores else None}
    say(f"{name}: {result['events_per_s']} events/s, worker cores {worker_cores:.2f}"
        f" (logs in {WORK})")
    return result


async def broker_kill_pass(rate: float, seconds: float) -> dict:
    env = isolated_env(database=DATABASE, cluster=True)
    env["TABLE_STORE"] = "rocksdb://"
    env["AUDIT_IN_WORKER"] = "false"
    await reset_stores(env)
    fleet = Fleet(env, "broker_kill")
    count = int(rate * seconds)
    try:
        fleet.start(0, 1)
        sim, summary_path = start_simulator(env, "broker_kill", "--count", str(count),
                                            "--rate", str(rate), "--seed", "52")
        produced_from = time.time()
        await asyncio.sleep(seconds / 3)
        victim = busiest_ratings_leader(env)
        killed_at = time.time()
        say(f"broker_kill: kill -9 {victim}")
        await asyncio.to_thread(stack.kill_node, victim)
        await asyncio.sleep(seconds / 3)
        restarted_at = time.time()
        say(f"broker_kill: restarting {victim}")
        await asyncio.to_thread(stack.start_node, victim)
        if await asyncio.to_thread(sim.wait, seconds * 4) != 0:
            raise RuntimeError("simulator failed")
        summary = json.loads(summary_path.read_text())
        stores, cfg = stores_for(env), settings_for(env)
        try:
            from streamapp.tally import tally
            for _ in range(600):
                diffs = expected_vs_tally(summary, await tally(stores, cfg))
                if not diffs:
                    break
                await asyncio.sleep(0.5)
            else:
                raise RuntimeError(f"broker_kill: stores never equalled the summary: {diffs}"
                                   f" (logs in {WORK})")
            pool = await stores.postgres.pool()
            rows = await pool.fetch(
                "SELECT extract(epoch FROM e.occurred_at)::float8 AS at,"
                " extract(epoch FROM e.applied_at - e.occurred_at)::float8 AS lat"
                " FROM applied_events e")
        finally:
            await stores.close()
    finally:
        fleet.stop_all()
    latencies = sorted(r["lat"] for r in rows)
    buckets: Dict[int, List[float]] = {}
    for r in rows:
        buckets.setdefault(int((r["at"] - produced_from) // 5) * 5, []).append(r["lat"])
    return {
        "workers": 2, "brokers": len(stack.kafka_nodes()), "rate": rate, "events": count,
        "killed": victim, "killed_after_s": round(killed_at - produced_from, 1),
        "restarted_after_s": round(restarted_at - produced_from, 1),
        "account_events_measured": len(latencies),
        "latency_s": percentiles(latencies),
        "latency_by_5s": {str(k): percentiles(sorted(v)) for k, v in sorted(buckets.items())},
        "latency_measured": ("PostgreSQL applied_events.applied_at (the writing transaction's"
                             " start) - occurred_at (wall clock at production), every account"
                             " event; buckets by occurred_at, seconds after production began"),
    }


def percentiles(values: List[float]) -> dict:
    if not values:
        return {}
    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 3)
    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": round(values[-1], 3),
            "mean": round(statistics.fmean(values), 3)}


async def run(args: argparse.Namespace) -> dict:
    base = isolated_env(database=DATABASE, cluster=True)
    base["TABLE_STORE"] = "rocksdb://"
    say(f"producing the fixed stream: {args.count} events")
    summary = await asyncio.to_thread(simulate, base, "--count", str(args.count), "--seed", "5",
                                      summary=WORK / "backlog-summary.json")
    backlog = [await backlog_pass(base, summary, n, args.timeout) for n in (1, 2)]
    kill = await broker_kill_pass(args.rate, args.seconds) if not args.backlog_only else None
    return {
        "machine": {"cpus": psutil.cpu_count(), "memory_gb": round(
            psutil.virtual_memory().total / 2**30, 1)},
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cluster": "3 Kafka KRaft brokers (RF 3, min.insync.replicas 2), 6-node Redis Cluster,"
                   " one PostgreSQL, FerretDB, OpenSearch; all on this machine",
        "backlog": backlog,
        "speedup_2_vs_1": round(backlog[1]["events_per_s"] / backlog[0]["events_per_s"], 2),
        "broker_kill": kill,
    }


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="scaling", description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=12_000)
    p.add_argument("--rate", type=float, default=300.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--out", default=str(RESULTS / "scaling.json"))
    p.add_argument("--backlog-only", action="store_true",
                   help="only the 1- and 2-worker backlog passes (no broker kill)")
    args = p.parse_args(argv)
    if not cluster_up():
        print("the cluster profile is not up: STACK_PROFILE=cluster make services-up",
              file=sys.stderr)
        return 2
    try:
        results = asyncio.run(run(args))
    finally:
        asyncio.run(drop_namespaces(CREATED))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("speedup_2_vs_1",)} | {
        "backlog": [(b["workers"], b["events_per_s"], b["worker_cores"]) for b in results["backlog"]],
        "broker_kill_latency_s": (results["broker_kill"] or {}).get("latency_s")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
