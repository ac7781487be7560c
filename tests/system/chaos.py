"""``make chaos``: the pipeline on a bad day, against the real stack.

Each scenario runs in a fresh namespace (topics, consumer group, databases),
breaks something real — ``kill -9`` of the worker, a store stopped with the
stack launcher, the broker restarted — and then checks every store against
what the simulator produced.  One line per scenario:

    scenario=<name> produced=<n> stored_postgres=<n> stored_mongo=<n> stored_redis=<n> stored_audit=<n> lost=<n> duplicated=<n>

``lost`` and ``duplicated`` are summed over the stores (and the rating
tables, compared with a count recomputed from PostgreSQL's durable rows).
The command exits non-zero unless every ``lost`` and ``duplicated`` is 0.

    python -m tests.system.chaos [SCENARIO ...]     # default: all
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import (CREATED, ROOT, Worker, drop_namespaces, expected_vs_tally,  # noqa: E402
                     isolated_env, reset_stores, settings_for, stores_for, wait_until)

STACK = [sys.executable, str(ROOT / "scripts" / "stack.py")]
WORK = Path(tempfile.mkdtemp(prefix="streamapp-chaos-"))


def stack(verb: str, service: str) -> None:
    subprocess.run([*STACK, verb, service], check=True, stdout=subprocess.DEVNULL)


def start_simulator(env: Dict[str, str], name: str, *args: str) -> Tuple[subprocess.Popen, Path]:
    summary = WORK / f"{name}-summary.json"
    proc = subprocess.Popen([sys.executable, "-m", "streamapp.simulator", "--quiet",
                             "--summary-json", str(summary), *args],
                            cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    return proc, summary


async def measure(env: Dict[str, str], summary: dict, with_audit: bool = True) -> Dict[str, int]:
    """Compare stores with the summary; returns the scenario line's numbers."""
    from streamapp.tally import tally


    stores, cfg = stores_for(env), settings_for(env)
    try:
        async def settled():
            return not expected_vs_tally(summary, await tally(stores, cfg))
        await wait_until(settled, timeout=900, interval=5)
        counts = await tally(stores, cfg)
        expect = summary["expect"]
        pg_expected = (sum(n for t, n in summary["per_type"].items()
                           if t.split(".")[0] in ("user", "subscription", "payment", "preference"))
                       + expect["postgres"]["ratings"])
        pg_stored = counts["postgres"]["applied_events"] + counts["postgres"]["ratings"]
        mongo_expected = expect["mongodb"]["movies"] + expect["mongodb"]["rated_votes"]
        mongo_stored = counts["mongodb"]["movies"] + counts["mongodb"]["rated_votes"]
        redis_expected = sum(expect["redis"].values())
        redis_stored = sum(counts["redis"][k] for k in expect["redis"])
        # Tables: the mirrored all-time counts must equal PostgreSQL's durable rows.
        pool = await stores.postgres.pool()
        durable = {r["movie_id"]: r["n"] for r in await pool.fetch(
            "SELECT movie_id, count(*) AS n FROM ratings GROUP BY movie_id")}

        async def mirrored():
            board = dict(await stores.redis.top(stores.redis.keys.rated_all, 100_000))
            return board if {k: int(v) for k, v in board.items()} == durable else None
        board = await wait_until(mirrored, timeout=60, interval=2) or dict(
            await stores.redis.top(stores.redis.keys.rated_all, 100_000))
        table_total = int(sum(board.values()))
        audit_stored = audit_expected = 0
        if with_audit:
            async def audited():
                await stores.audit.refresh()
                return await stores.audit.count(doc_kind="event") >= summary["valid"]
            await wait_until(audited, timeout=300, interval=3)
            audit_stored = await stores.audit.count(doc_kind="event")
            audit_expected = summary["valid"]
        pairs = [(pg_expected, pg_stored), (mongo_expected, mongo_stored),
                 (redis_expected, redis_stored), (audit_expected, audit_stored),
                 (sum(durable.values()), table_total)]
        return {
            "produced": summary["valid"],
            "stored_postgres": pg_stored, "stored_mongo": mongo_stored,
            "stored_redis": redis_stored, "stored_audit": audit_stored,
            "lost": sum(max(0, want - got) for want, got in pairs),
            "duplicated": sum(max(0, got - want) for want, got in pairs),
        }
    finally:
        await stores.close()


async def run_scenario(name: str, produce_args: List[str],
                       disturb: Callable[[Worker, Dict[str, str]], None],
                       with_audit: bool = True,
                       before: Callable[[], None] = None,
                       after: Callable[[], None] = None) -> Dict[str, int]:
    import json

    # Databases of its own: the test suite resets the shared test ones.
    env = isolated_env(database="streamapp_chaos", redis_db=3)
    env["TABLE_STORE"] = "rocksdb://"
    await reset_stores(env)
    worker = Worker(env, WORK / f"{name}-worker.log", port=6091).start()
    try:
        worker.wait_ready()
        if before:
            before()
        sim, summary_path = start_simulator(env, name, *produce_args)
        worker = disturb(worker, env) or worker
        if sim.wait(600) != 0:
            raise RuntimeError("simulator failed")
        summary = json.loads(summary_path.read_text())
        if after:  # the rest of the pipeline must be complete before the fix
            await measure(env, summary, with_audit=False)
            after()
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker died: {worker.tail()}")
        return await measure(env, summary, with_audit)
    finally:
        worker.stop()


def kill_nine_three_times(worker: Worker, env: Dict[str, str]) -> Worker:
    for pause in (12, 15, 15):
        time.sleep(pause)
        worker.kill(signal.SIGKILL)
        worker = Worker(env, worker.log_path, port=worker.port).start()
        worker.wait_ready(120)
    return worker


def stop_redis_then_postgres(worker: Worker, env: Dict[str, str]) -> None:
    time.sleep(5)
    for service in ("redis", "postgres"):
        stack("down", service)
        time.sleep(10)
        stack("up", service)
        time.sleep(3)


def restart_broker(worker: Worker, env: Dict[str, str]) -> None:
    time.sleep(8)
    stack("down", "kafka")
    time.sleep(3)
    stack("up", "kafka")


def nothing(worker: Worker, env: Dict[str, str]) -> None:
    return None


SCENARIOS = {
    "kill9_x3": lambda: run_scenario(
        "kill9_x3", ["--count", "100000", "--seed", "21"], kill_nine_three_times),
    "redis_then_postgres_down": lambda: run_scenario(
        "redis_then_postgres_down", ["--count", "12000", "--rate", "300", "--seed", "22"],
        stop_redis_then_postgres),
    "audit_down_whole_run": lambda: run_scenario(
        "audit_down_whole_run", ["--count", "6000", "--seed", "23"], nothing,
        before=lambda: stack("down", "opensearch"),
        after=lambda: stack("up", "opensearch")),
    "broker_restart": lambda: run_scenario(
        "broker_restart", ["--count", "8000", "--rate", "400", "--seed", "24"],
        restart_broker),
}


def main(names: List[str]) -> int:
    failed = False
    for name in names or list(SCENARIOS):
        try:
            result = asyncio.run(SCENARIOS[name]())
        except Exception as exc:  # a scenario that cannot finish is a failure, loudly
            print(f"scenario={name} error={type(exc).__name__}: {exc}", flush=True)
            failed = True
            continue
        print(f"scenario={name} " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)
        failed |= bool(result["lost"] or result["duplicated"])
    asyncio.run(drop_namespaces(CREATED))
    print(f"logs: {WORK}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
