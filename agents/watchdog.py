"""Notice a source partition whose commits stand still behind its end, and rebalance.

After a rebalance on the three-broker cluster, a few newly assigned
partitions never fetched again until the next rebalance (faust-streaming has
open reports of the same: "certain topic partitions are not sending fetch
requests").  The next rebalance cures it: Faust seeks every partition to its
committed offset and reads on from there.  This timer looks for the symptom and asks for it:

a partition is *stalled* when, for ``STALL_CHECKS`` checks in a row
(``CHECK_S`` apart), this worker owns it, Kafka holds messages past the
group's committed offset, that offset did not move, no store write was being
retried (an outage stalls partitions on purpose), and no rebalance or
recovery was under way.  Then the worker asks the group coordinator to
rejoin.  Every write is idempotent, so the replay a rebalance may cause is
harmless.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional, Set, Tuple

from streamapp import metrics
from streamapp.app import app
from streamapp.deployment import deployment
from streamapp.topics import STREAM_OF_TOPIC

log = logging.getLogger(__name__)

#: How often partitions are checked, and how many checks in a row make a stall.
CHECK_S = 15.0
STALL_CHECKS = 2

#: Per partition: the committed offset at the last check, and checks stalled in a row.
_last: Dict[Tuple[str, int], Optional[int]] = {}
_stalled: Dict[Tuple[str, int], int] = {}
_retries_seen = 0.0


def _retries() -> float:
    return sum(metrics.totals(metrics.store_retries, "store").values())


def _busy() -> bool:
    """A rebalance or table recovery is under way: partitions move on purpose."""
    return bool(app.rebalancing or getattr(app, "in_recovery", False)
                or not app.tables.recovery.completed.is_set())  # type: ignore[attr-defined]


@app.timer(interval=CHECK_S)
async def watch_partitions() -> None:
    global _retries_seen
    retries = _retries()
    retried, _retries_seen = retries != _retries_seen, retries
    if _busy() or retried:
        _stalled.clear()
        _last.clear()
        return
    mine = {(tp.topic, tp.partition) for tp in app.consumer.assignment()
            if tp.topic in STREAM_OF_TOPIC}
    try:
        offsets = await deployment.offsets(sorted(STREAM_OF_TOPIC))
    except Exception as exc:  # Kafka unreachable: nothing to judge by
        log.info("partition watchdog skipped: %s: %s", type(exc).__name__, exc)
        return
    stalled: Set[Tuple[str, int]] = set()
    for tp, (committed, end) in offsets.items():
        key = (tp.topic, tp.partition)
        if key not in mine:
            continue
        behind = end > (committed or 0)
        if behind and key in _last and _last[key] == committed:
            _stalled[key] = _stalled.get(key, 0) + 1
        else:
            _stalled.pop(key, None)
        _last[key] = committed
        if _stalled.get(key, 0) >= STALL_CHECKS:
            stalled.add(key)
    for key in list(_last):
        if key not in mine:
            _last.pop(key, None)
            _stalled.pop(key, None)
    if stalled:
        log.warning("partitions %s have messages past their committed offsets, which did not "
                    "move for %.0f s; asking the group to rebalance",
                    sorted(f"{t}/{p}" for t, p in stalled), CHECK_S * STALL_CHECKS)
        _stalled.clear()
        _last.clear()
        request_rebalance()


def request_rebalance() -> None:
    """Ask the group coordinator for a rejoin, in the consumer's own thread."""
    thread = app.consumer._thread  # type: ignore[attr-defined]  # Faust runs aiokafka in a thread of its own
    consumer = thread._consumer
    if consumer is not None:
        thread.thread_loop.call_soon_threadsafe(consumer._coordinator.request_rejoin)
