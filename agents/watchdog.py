"""Notice a source partition whose commits stand still behind its end, and rebalance.

A safety net.  After rebalances on the three-broker cluster, newly assigned
partitions stood still until the next rebalance: the cause found was
aiokafka not seeking never-committed partitions back
(``streamapp.consumer.SafeAckConsumer.perform_seek`` does now), and
faust-streaming has open reports of similar ones ("certain topic partitions
are not sending fetch requests").  A rebalance cures them: every partition
is sought to its committed offset and read on from there.  This timer looks
for the symptom, logs what the consumer holds about the partition (to find
the next cause), and asks for it:

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
from typing import Any, Dict, Optional, Set, Tuple

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
        log.warning("stalled partitions, as the consumer sees them: %s",
                    "; ".join(describe(topic, partition) for topic, partition in sorted(stalled)))
        _stalled.clear()
        _last.clear()
        request_rebalance()


def describe(topic: str, partition: int) -> str:
    """What Faust and aiokafka hold about a partition: where a stall comes from."""
    consumer: Any = app.consumer  # SafeAckConsumer: its bookkeeping is not in ConsumerT
    tp = next((t for t in consumer.assignment() if (t.topic, t.partition) == (topic, partition)),
              None)
    if tp is None:
        return f"{topic}/{partition}: not assigned"
    facts = [f"active={tp in (consumer._active_partitions or ())}",
             f"paused={tp in consumer._paused_partitions}",
             f"buffered={tp in consumer._buffered_partitions}",
             f"read={consumer._read_offset.get(tp)}",
             f"committed={consumer._committed_offset.get(tp)}",
             f"flow={consumer.flow_active}",
             f"first_read={getattr(consumer, '_first_read', {}).get(tp)}",
             f"acked_head={sorted(consumer._acked.get(tp, []))[:5]}",
             f"unacked={sorted(m.offset for m in consumer._unacked_messages if m.tp == tp)[:5]}"]
    try:
        kafka = consumer._thread._consumer
        state = kafka._subscription.subscription.assignment.state_value(tp)
        fetcher = kafka._fetcher
        facts += [f"kafka_paused={state.paused}",
                  f"position={state._position}",
                  f"awaiting_reset={state.awaiting_reset}",
                  f"fetched_unread={tp in fetcher._records}",
                  f"in_flight={sorted(fetcher._in_flight)}"]
    except Exception as exc:  # diagnostics only: aiokafka internals may change
        facts.append(f"aiokafka state unavailable ({type(exc).__name__})")
    return f"{topic}/{partition}: " + " ".join(facts)


def request_rebalance() -> None:
    """Ask the group coordinator for a rejoin, in the consumer's own thread."""
    thread = app.consumer._thread  # type: ignore[attr-defined]  # Faust runs aiokafka in a thread of its own
    consumer = thread._consumer
    if consumer is not None:
        thread.thread_loop.call_soon_threadsafe(consumer._coordinator.request_rejoin)
