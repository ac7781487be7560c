"""The peer pass: a Quix Streams pass-through, measured like Faust's (pass 2).

Pass 2 tells what Faust itself costs.  This pass tells what the tool a user
would pick instead costs for the same job: Quix Streams
(``tests.system.peer_passthrough_app``) reads the same preloaded topics and
partitions from the beginning in a fresh consumer group, decodes each value
as JSON and produces it to an output topic of the pass's own.  It is timed
as pass 2 is (``watch_progress``), from the log line that says its consumer
can read (its first partitions assigned; Faust's 'Ready' comes right after
its first assignment) to the last event processed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from tests.harness import settings_for
from tests.system.bench.common import STREAM_NAMES, logged_at
from tests.system.bench.passthrough import watch_progress
from tests.system.bench.procs import Process
from tests.system.peer_passthrough_app import ASSIGNED

PEER = "peer_passthrough"


async def pass_peer_passthrough(env: Dict[str, str], total: int, work: Path,
                                name: str = PEER) -> dict:
    """Quix Streams over the bench's topics: a fresh group, an output topic of its own."""
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
        PEER, proc, progress, total, lambda log: logged_at(log, ASSIGNED),
        "the log line the app writes once its first partitions are assigned",
        "Quix Streams (tests.system.peer_passthrough_app): same topics, JSON decode,"
        " produce to a topic of its own, commit")
    # Stopped by SIGTERM, it committed a last checkpoint, which flushes the
    # producer: every event should be in the output topic.
    return {**result,
            "output_messages": await topic_size(cfg.topic(name), cfg.kafka_bootstrap, cfg),
            "settings": {"processing_guarantee": "at-least-once", "commit_interval_s": 5.0,
                         "auto_offset_reset": "earliest", "acks": "all",
                         "enable.idempotence": True, "output_partitions": cfg.topic_partitions}}
