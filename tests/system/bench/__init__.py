"""``make bench``: what the pipeline costs, measured on the local stack.

One fixed stream is produced once (``--count 20000 --seed 5`` by default)
into a namespace of its own; then every pass re-reads those same topics from
the beginning with a fresh consumer group / app id:

1. ``ceiling``     a bare aiokafka consumer that does no work;
2. ``passthrough`` a real Faust worker (``tests.system.passthrough_app``): same
                   topics, same ``take_events`` batching, no work;
   ``peer_passthrough`` what a user would pick instead of Faust: Quix Streams
                   (``tests.system.peer_passthrough_app``) on the same topics,
                   decoding each value as JSON and producing it to a topic of
                   its own;
3. ``pipeline``    the real ``faust -A streamapp worker`` (every store, the
                   tables, the audit trail), fresh app id and empty stores,
                   timed until the tally equals the simulator's summary;
4. ``per_event``   the same with ``BATCH_SIZE=1`` (one round trip per event
                   per store), stopped after a time budget; its rate comes from
                   the events durable when the budget ran out.

(Pass 4 runs before pass 3, so that pass 3's worker can stay up for the
latency pass without pass 4 reading the latency pass's events.)

Then, on the still running pipeline worker, a latency pass produces new
events at about half the pipeline's sustained rate (``occurred_at`` is the
wall clock at production) and takes end-to-end latency percentiles from
PostgreSQL (``applied_events.applied_at - occurred_at``) and, for every kind
of event, from the outcome messages S2 publishes after each store write.

Results: ``bench/results/latest.json`` and ``bench/results/latest.png``;
``bench/README.md`` explains them.  ``--profile`` instead runs only the
pipeline pass, its worker under pyinstrument, and writes
``bench/results/profile.txt`` (the worker's call tree, then the same with
Faust's frames shown) and ``profile.json``.  ``--compare-mongodb secantus``
(or ``ferretdb``) then also starts that MongoDB server next to the stack's
and runs pass 3 and the title pass on each, in alternating rounds
(``mongodb_comparison`` in the JSON).

    python -m tests.system.bench [--count N] [--seed S] [--per-event-budget S]
                                 [--latency-seconds S] [--max-seconds S]
                                 [--profile] [--keep] [--out DIR]
                                 [--compare-mongodb SERVERS] [--compare-rounds N]
"""
from __future__ import annotations

# What other runs (soak, experiments) use; the modules are:
#   common      names, targets, the namespace, small helpers
#   numbers     rates, ratios, percentiles, events per second
#   measure     the stores' progress counters, a worker's RSS and CPU
#   procs       the processes a pass starts, --pin-worker
#   ceiling, passthrough, peer, pipeline, per_event, sustained, latency   the passes
#   passthroughs   passes 2 and peer alone (Kafka only), in rounds
#   by_kind     progress by kind of event
#   topics      outcome times, the audit trail's lag, dead letters
#   producer    the live producer of the sustained and latency passes
#   report, chart   results.json, latest.png, the profile's text
#   run, cli    the run's steps; the options
from tests.system.bench.cli import main
from tests.system.bench.common import RESULTS, bench_env, faust_ready_at, machine_info
from tests.system.bench.measure import Probe, tree_usage
from tests.system.bench.pipeline import pipeline_env
from tests.system.bench.procs import RUNNING, start_audit, start_worker, stop_worker
from tests.system.bench.producer import start_producer
from tests.system.bench.run import single_run_lock

__all__ = ["RESULTS", "RUNNING", "Probe", "bench_env", "faust_ready_at", "machine_info", "main",
           "pipeline_env", "single_run_lock", "start_audit", "start_producer", "start_worker",
           "stop_worker", "tree_usage"]
