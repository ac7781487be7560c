"""``make cluster-chaos``: several workers on the cluster profile, on a bad day.

The stack's cluster profile (``STACK_PROFILE=cluster``: 3 Kafka brokers with
replication factor 3 and ``min.insync.replicas=2``, a 6-node Redis Cluster,
and the shared PostgreSQL, MongoDB and OpenSearch) must be up.  Each scenario
runs in a namespace of its own (topics, consumer group, databases, a Redis
key prefix), breaks a machine for real while the simulator produces, and then
checks every store against what was produced, the rating tables against a
count recomputed from PostgreSQL's durable rows, as ``make chaos`` does on
one node.  One line per scenario:

    scenario=<name> workers=<n> brokers=<n> produced=<n> stored_postgres=<n> stored_mongo=<n> stored_redis=<n> stored_audit=<n> lost=<n> duplicated=<n>

``workers`` is the most that ran at once, ``brokers`` the brokers of the
cluster.  The command exits non-zero unless every ``lost`` and ``duplicated``
is 0.

    python -m tests.system.cluster_chaos [SCENARIO ...]     # default: all
"""
from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import Worker, cluster_up, isolated_env, measure, reset_stores, stack_module  # noqa: E402
from tests.system.chaos import WORK, run_scenarios, start_simulator, stop_simulator  # noqa: E402

stack = stack_module()
BASE_PORT = 6191


class Fleet:
    """The workers of one deployment: same app id, own web ports and table dirs."""

    def __init__(self, env: Dict[str, str], name: str) -> None:
        self.env, self.name = env, name
        self.workers: Dict[int, Worker] = {}
        self.most = 0

    def start(self, *indexes: int) -> None:
        for i in indexes:
            env = {**self.env, "STREAMAPP_DATA_DIR": f"{self.env['STREAMAPP_DATA_DIR']}-{i}"}
            self.workers[i] = Worker(env, WORK / f"{self.name}-worker-{i}.log",
                                     port=BASE_PORT + i).start()
        for i in indexes:
            self.workers[i].wait_ready(180)
        self.most = max(self.most, len(self.running()))

    def running(self) -> List[int]:
        return [i for i, w in self.workers.items() if w.proc and w.proc.poll() is None]

    def kill(self, i: int) -> None:
        say(f"{self.name}: kill -9 worker {i}")
        self.workers[i].kill(signal.SIGKILL)

    def stop(self, i: int) -> None:
        say(f"{self.name}: stopping worker {i}")
        self.workers[i].stop()

    def check_alive(self, expected: List[int]) -> None:
        dead = [i for i in expected if self.workers[i].proc.poll() is not None]
        if dead:
            raise RuntimeError(f"worker(s) {dead} died: {self.workers[dead[0]].tail()}")

    def stop_all(self) -> None:
        for i in self.running():
            self.workers[i].stop()


def say(message: str) -> None:
    print(f"cluster-chaos: {message}", file=sys.stderr, flush=True)


async def run_scenario(name: str, workers: int, produce_args: List[str],
                       disturb: Callable[[Fleet], None]) -> Dict[str, int]:
    env = isolated_env(database="streamapp_cluster_chaos", cluster=True)
    env["TABLE_STORE"] = "rocksdb://"
    await reset_stores(env)
    fleet = Fleet(env, name)
    sim = None
    try:
        fleet.start(*range(workers))
        sim, summary_path = start_simulator(env, name, *produce_args)
        await asyncio.to_thread(disturb, fleet)
        if await asyncio.to_thread(sim.wait, 900) != 0:
            raise RuntimeError("simulator failed")
        summary = json.loads(summary_path.read_text())
        result = await measure(env, summary)
        fleet.check_alive(fleet.running())
        return {"workers": fleet.most, "brokers": len(stack.kafka_nodes()), **result}
    finally:
        fleet.stop_all()
        stop_simulator(sim)


# --- the faults ----------------------------------------------------------------------

def busiest_ratings_leader(env: Dict[str, str]) -> str:
    """The Kafka node that leads most partitions of the ratings topic (asked, not assumed)."""
    leaders = stack.kafka_leaders(f"{env['TOPIC_PREFIX']}.ratings")
    counts: Dict[int, int] = {}
    for info in leaders.values():
        counts[info["leader"]] = counts.get(info["leader"], 0) + 1
    node_id = max(counts, key=lambda n: (counts[n], -n))
    return f"kafka-{node_id}"


def broker_kill9(fleet: Fleet) -> None:
    time.sleep(12)
    victim = busiest_ratings_leader(fleet.env)
    say(f"broker_kill9: kill -9 {victim}, which leads most ratings partitions")
    stack.kill_node(victim)
    time.sleep(25)
    fleet.check_alive([0, 1])
    stack.start_node(victim)  # waits until the cluster is whole and in sync again


def worker_kill9(fleet: Fleet) -> None:
    for victim, pause in ((1, 10), (2, 20)):
        time.sleep(pause)
        fleet.kill(victim)
        time.sleep(8)
        fleet.start(victim)


def rolling_restart(fleet: Fleet) -> None:
    time.sleep(8)
    for i in sorted(fleet.workers):
        fleet.stop(i)
        fleet.start(i)
        time.sleep(4)


def scale_1_3_1(fleet: Fleet) -> None:
    time.sleep(8)
    say("scale_1_3_1: 1 -> 3 workers")
    fleet.start(1, 2)
    time.sleep(20)
    say("scale_1_3_1: 3 -> 1 worker")
    fleet.stop(2)
    fleet.stop(1)


def redis_failover(fleet: Fleet) -> None:
    from streamapp.stores.redis import Keys

    time.sleep(10)
    boards = Keys(fleet.env["REDIS_KEY_PREFIX"]).rated_all
    master = stack.redis_master_for_key(boards)
    say(f"redis_failover: kill -9 {master.name}, the master holding {boards}")
    stack.kill_node(master.name)
    stack.wait_redis_cluster(timeout=60)  # its replica took over
    say(f"redis_failover: replica promoted; {stack.redis_master_for_key(boards).name} holds it")
    time.sleep(10)
    stack.start_node(master.name)  # rejoins as a replica


SCENARIOS = {
    "broker_kill9": lambda: run_scenario(
        "broker_kill9", 2, ["--count", "30000", "--rate", "500", "--seed", "31"], broker_kill9),
    "worker_kill9": lambda: run_scenario(
        "worker_kill9", 3, ["--count", "30000", "--rate", "500", "--seed", "32"], worker_kill9),
    "rolling_restart": lambda: run_scenario(
        "rolling_restart", 3, ["--count", "30000", "--rate", "500", "--seed", "33"],
        rolling_restart),
    "scale_1_3_1": lambda: run_scenario(
        "scale_1_3_1", 1, ["--count", "30000", "--rate", "500", "--seed", "34"], scale_1_3_1),
    "redis_failover": lambda: run_scenario(
        "redis_failover", 2, ["--count", "20000", "--rate", "500", "--seed", "35"],
        redis_failover),
}


def main(names: List[str]) -> int:
    if not cluster_up():
        print("the cluster profile is not up: STACK_PROFILE=cluster make services-up",
              file=sys.stderr)
        return 2
    return run_scenarios(SCENARIOS, names)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
