"""The benchmark's pass-through worker: Faust, but no work.

``python -m faust -A tests.system.passthrough_app worker`` is a real Faust
worker with the same broker settings as ``streamapp.app`` (processing
guarantee, acks, partitions, offset reset) whose agents read the same event
topics with the same ``take_events`` batching as ``agents/`` and then do
nothing: no decoding, no store writes, no tables, no outcome messages.  What
it costs is what Faust itself costs; the full pipeline is compared with it.

Progress goes to the file named by ``BENCH_PROGRESS_FILE`` (one line per
flush: ``<unix time> <events in batches finished since the last line>``), so
the benchmark can draw throughput over time without touching the worker.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import List, Tuple

import faust

from streamapp import consumer
from streamapp.app import broker_options
from streamapp.config import settings
from streamapp.topics import STREAMS

PROGRESS_FILE = os.environ.get("BENCH_PROGRESS_FILE", "")
_data_dir = Path(settings.data_dir) / "passthrough"
_data_dir.mkdir(parents=True, exist_ok=True)

app = faust.App(
    f"{settings.app_id}-passthrough",
    **broker_options(settings),
    store="memory://",
    datadir=str(_data_dir),
    web_enabled=False,
)
consumer.install(app)  # the same fetch loop as streamapp.app

#: (finished at, events) per batch, flushed to the progress file by a timer.
_done: List[Tuple[float, int]] = []


def _passthrough_agent(name: str):
    topic = app.topic(settings.topic(name), key_serializer="raw", value_serializer="raw",
                      partitions=settings.topic_partitions, replicas=settings.topic_replicas,
                      internal=True)

    async def passthrough(stream):
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            _done.append((time.time(), len(batch)))

    app.agent(topic, name=f"passthrough-{name}")(passthrough)


for _name in STREAMS:
    _passthrough_agent(_name)


@app.timer(interval=0.25)
async def flush_progress() -> None:
    if not PROGRESS_FILE or not _done:
        return
    lines = "".join(f"{at:.3f} {n}\n" for at, n in _done)
    _done.clear()
    with open(PROGRESS_FILE, "a") as fh:
        fh.write(lines)
