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
from typing import Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import CREATED, ROOT, Worker, drop_namespaces, isolated_env, measure, reset_stores  # noqa: E402

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
    sim = None
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
        stop_simulator(sim)


def stop_simulator(sim: Optional[subprocess.Popen]) -> None:
    """A scenario that failed midway must not leave its simulator producing."""
    if sim is not None and sim.poll() is None:
        sim.kill()
        sim.wait()


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


def kill_mongodb(worker: Worker, env: Dict[str, str]) -> None:
    """kill -9 of the MongoDB server mid-stream: what it acknowledged must be
    there when it is back (for a stand-in, that its writes are durable)."""
    time.sleep(3)  # the catalog load is under way
    stack("kill", "mongodb")
    time.sleep(8)
    stack("up", "mongodb")


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
    "mongodb_kill9": lambda: run_scenario(
        "mongodb_kill9", ["--count", "12000", "--rate", "300", "--seed", "25"], kill_mongodb),
    "broker_restart": lambda: run_scenario(
        "broker_restart", ["--count", "8000", "--rate", "400", "--seed", "24"],
        restart_broker),
}


def run_scenarios(scenarios: Dict[str, Callable], names: List[str]) -> int:
    """Run the named scenarios (all by default), one line each; 1 if any lost,
    doubled or could not finish."""
    failed = False
    for name in names or list(scenarios):
        started = time.monotonic()
        try:
            result = asyncio.run(scenarios[name]())
        except Exception as exc:  # a scenario that cannot finish is a failure, loudly
            print(f"scenario={name} error={type(exc).__name__}: {exc}", flush=True)
            failed = True
            continue
        print(f"scenario={name} " + " ".join(f"{k}={v}" for k, v in result.items()
                                             if k != "unsettled" or v), flush=True)
        print(f"({name} took {time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
        failed |= bool(result["lost"] or result["duplicated"])
    asyncio.run(drop_namespaces(CREATED))
    print(f"logs: {WORK}")
    return 1 if failed else 0


def main(names: List[str]) -> int:
    return run_scenarios(SCENARIOS, names)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
