"""Pass 4, the per-event baseline: the real worker with ``BATCH_SIZE=1``.

One round trip per event and store: what batching saves.  It is stopped
after a time budget and its rate comes from the events durable by then.  It
runs before pass 3, so that pass 3's worker can stay up for the live passes
without this one reading their events.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

from tests.system.bench.pipeline import pipeline_env, run_pipeline


def per_event_env(base: Dict[str, str], tag: str, work: Path) -> Dict[str, str]:
    return pipeline_env(base, tag, "per_event", work, BATCH_SIZE="1")


async def pass_per_event(env: Dict[str, str], summary: dict, budget: float, timeout: float,
                         work: Path) -> dict:
    return await run_pipeline("per_event", env, summary, budget, timeout, work)
