"""The benchmark's peer pass-through: what a user would write with Quix Streams.

``python -m tests.system.peer_passthrough_app --topics A,B --output OUT ...``
is the job a user would pick Quix Streams for instead of Faust, written the
way its documentation shows: an ``Application`` in a consumer group of its
own, one ``StreamingDataFrame`` per event topic with the JSON deserializer,
each value sent on with ``sdf.to_topic`` to one output topic (JSON
serializer, the input key kept).  Per event: consume, decode JSON, encode
JSON, produce, and commit on Quix's checkpoint schedule.

Settings are Quix's defaults (at-least-once, ``commit_interval`` 5 s, an
idempotent producer, so acks=all) except two: ``auto_offset_reset`` is
``earliest`` (the events are preloaded, as for every pass), and acks=all is
also written out, to be the same as ``streamapp.app.broker_options`` whatever
the defaults become.  It imports neither Faust nor ``streamapp``: what it
costs is what Quix Streams costs.

Progress goes to ``--progress`` in the pass-through's format (one line per
flush: ``<unix time> <events processed since the last line>``), written by
a thread every 0.25 s, so that counting costs the processing loop one
callback per event.
"""
from __future__ import annotations

import argparse
import logging
import threading
import time
from typing import TYPE_CHECKING, List, Optional

if TYPE_CHECKING:  # imported where used: the benchmark imports ASSIGNED only
    from quixstreams import Application

FLUSH_EVERY_S = 0.25
#: Logged (in Quix Streams' log format) when the consumer's first partitions
#: are assigned: the benchmark's start of the timed part.
ASSIGNED = "peer pass-through: partitions assigned"


class Progress:
    """Events processed (``on_message_processed``) and when the latest was."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        self.at = 0.0
        self._written = 0
        self._stop = threading.Event()

    def __call__(self, topic: str, partition: int, offset: int) -> None:
        self.count += 1
        self.at = time.time()

    def flush(self) -> None:
        count, at = self.count, self.at
        if count > self._written:
            with open(self.path, "a") as fh:
                fh.write(f"{at:.3f} {count - self._written}\n")
            self._written = count

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_EVERY_S):
            self.flush()

    def start(self) -> Progress:
        threading.Thread(target=self._run, name="progress", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.flush()


def build(bootstrap: str, group: str, topics: List[str], output: str, partitions: int,
          state_dir: str, progress: Optional[Progress] = None) -> Application:
    from quixstreams import Application
    from quixstreams.models import TopicConfig

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        state_dir=state_dir,  # unused (no state), but not ./state in the repo
        auto_offset_reset="earliest",
        producer_extra_config={"acks": "all"},
        on_message_processed=progress,
    )
    out = app.topic(output, value_serializer="json",
                    config=TopicConfig(num_partitions=partitions, replication_factor=1))
    for name in topics:
        app.dataframe(app.topic(name, value_deserializer="json")).to_topic(out)
    _log_first_assignment(app)
    return app


def _log_first_assignment(app: Application) -> None:
    """Log ``ASSIGNED`` once the first partitions are assigned and set up.

    The benchmark times every pass from when its consumer could start
    reading (Faust's 'Ready' comes right after its first assignment); Quix
    Streams logs its start before it joins the group, and has no public
    rebalance hook, so this wraps the callback it subscribes with.
    """
    from quixstreams.logging import LOGGER_NAME

    on_assign = app._on_assign  # noqa: SLF001
    done: List[bool] = []

    def wrapped(consumer, partitions) -> None:
        on_assign(consumer, partitions)
        if partitions and not done:
            done.append(True)
            logging.getLogger(LOGGER_NAME).info("%s: %d partitions", ASSIGNED, len(partitions))

    app._on_assign = wrapped  # type: ignore[method-assign]  # noqa: SLF001


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.system.peer_passthrough_app")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--topics", required=True, help="comma-separated event topics")
    p.add_argument("--output", required=True, help="the topic every event is sent on to")
    p.add_argument("--partitions", type=int, required=True, help="of the output topic")
    p.add_argument("--progress", required=True)
    p.add_argument("--state-dir", required=True)
    args = p.parse_args(argv)
    progress = Progress(args.progress).start()
    try:
        build(args.bootstrap, args.group, args.topics.split(","), args.output,
              args.partitions, args.state_dir, progress).run()
    finally:
        progress.stop()


if __name__ == "__main__":
    main()
