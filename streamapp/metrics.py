"""Our counters, in Prometheus's default registry (served at ``/metrics``
next to Faust's own sensor) and readable in-process for the dashboard."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

events_stored = Counter(
    "streamapp_events_stored_total", "Events durably written, per store and stream",
    ["store", "stream"])
events_rejected = Counter(
    "streamapp_events_rejected_total", "Events sent to the dead-letter topic, per reason",
    ["stream", "reason"])
store_retries = Counter(
    "streamapp_store_retries_total", "Failed store round trips that were retried", ["store"])
events_consumed = Counter(
    "streamapp_events_consumed_total", "Events read from each source stream", ["stream"])

batch_seconds = Histogram(
    "streamapp_batch_seconds", "Time a batch spends in each stage, per stream",
    ["stream", "stage"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def totals(counter: Counter, label: str) -> dict:
    """Sum of a counter per value of one label, e.g. events consumed per stream."""
    out: dict = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = sample.labels[label]
                out[key] = out.get(key, 0.0) + sample.value
    return out
