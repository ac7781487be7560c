"""``--compare-mongodb``: the full pipeline and the title writes on each local
MongoDB stand-in, in one run.

The stack runs one MongoDB server (``MONGODB_SERVER``).  Each other server
named here is started by this pass, as the stack would run it (the same
build in the stack's cache, the same flags; FerretDB on the stack's
PostgreSQL, with its ``_id`` index), on a free port with a data directory in
the run's work directory, and stopped at the end.  Then, in alternating
rounds, pass 3 on each server (the same events, worker settings and emptied
stores every time), and the ``mongo_titles`` pass on each: so the choice of
the default stand-in rests on numbers taken side by side, not on runs an
hour apart (bench/README.md, "MongoDB stand-in").
"""
from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
from pathlib import Path
from typing import Awaitable, Callable, Dict, List, Optional

from tests.harness import free_port, reset_stores, scripts_module, with_path
from tests.system.bench.common import BENCH_DATABASE, say
from tests.system.bench.titles import pass_mongo_titles
from tests.system.mongo_candidates import server_info

#: Longest wait for a started server to answer a ping.
START_TIMEOUT_S = 60.0


def flavour_of(info: dict) -> str:
    """The stack's flavour name for a server, from its ``buildInfo``."""
    if "ferretdbVersion" in info:
        return "ferretdb"
    if "secantusVersion" in info:
        return "secantus"
    return "mongod"


class Candidate:
    """One more MongoDB server, started the way ``scripts/stack.py`` starts it."""

    def __init__(self, flavour: str, work: Path) -> None:
        mongodb = scripts_module("servers.mongodb")
        postgres = scripts_module("servers.postgres")
        self.flavour = flavour
        self.server = mongodb.MongoDB(postgres.Postgres()).flavours[flavour]
        self.data = work / f"mongodb-{flavour}"
        self.log = work / f"mongodb-{flavour}.log"
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return with_path(f"mongodb://127.0.0.1:{self.port}", BENCH_DATABASE)

    async def start(self) -> None:
        self.server.install()  # builds it into the stack's cache the first time
        self.data.mkdir(parents=True, exist_ok=True)
        self.server.prepare(self.data)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.server.command(self.data, f"127.0.0.1:{self.port}"),
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.flavour} exited: {self.log.read_text()[-500:]}")
            try:
                await server_info(self.url)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


#: Runs one pipeline round: (round name, env) → the pass's result.
PipelineRound = Callable[[str, Dict[str, str]], Awaitable[Optional[dict]]]


async def compare_mongodb(base: Dict[str, str], flavours: List[str], rounds: int, work: Path,
                          pipeline_round: PipelineRound) -> dict:
    """Alternating pass-3 rounds and a title pass on the stack's server and on
    each of ``flavours``; returns the ``mongodb_comparison`` results."""
    stack = flavour_of(await server_info(base["MONGODB_URL"]))
    envs: Dict[str, Dict[str, str]] = {stack: base}
    started: List[Candidate] = []
    try:
        for flavour in flavours:
            if flavour in envs:
                continue
            candidate = Candidate(flavour, work)
            say(f"starting {flavour} on port {candidate.port} for the comparison ...")
            await candidate.start()
            started.append(candidate)
            envs[flavour] = {**base, "MONGODB_URL": candidate.url}
        report: Dict[str, dict] = {name: {"server": await server_info(env["MONGODB_URL"]),
                                          "stack_default": name == stack, "rounds": []}
                                   for name, env in envs.items()}
        for round_ in range(rounds):
            for name, env in envs.items():
                await reset_stores(env)
                result = await pipeline_round(f"mongodb_{name}_{round_}", env)
                report[name]["rounds"].append(_round_summary(result))
        for name, env in envs.items():
            report[name]["mongo_titles"] = await pass_mongo_titles(env)
        for entry in report.values():
            rates = [r["events_per_s"] for r in entry["rounds"] if r.get("events_per_s")]
            entry["median_pipeline_events_per_s"] = round(statistics.median(rates), 1) if rates else None
            entry["title_upserts_per_s"] = entry["mongo_titles"]["events_per_s"]
        return {"stack_server": stack, "rounds": rounds, "servers": report,
                "measured": "alternating rounds of pass 3 (the full pipeline, emptied stores) on "
                            "each server, then the mongo_titles pass on each; medians over the "
                            "rounds"}
    finally:
        for candidate in started:
            candidate.stop()


def _round_summary(result: Optional[dict]) -> dict:
    """The parts of a pass-3 round that tell the servers apart."""
    if not result:
        return {"error": "round failed"}
    keys = ("events_per_s", "seconds", "all_durable", "kind_done_after_s",
            "cpu_cores_by_process", "batch_seconds_by_stream_and_stage")
    return {k: result.get(k) for k in keys}

