"""What every S2 agent does with a batch: decode, dead-letter, write, report.

The flow for one batch of raw Kafka events:

1. decode each value strictly (``streamapp.codec``);
2. send what cannot be decoded to the dead-letter topic, original bytes in
   the value and the reason in headers, and wait until Kafka has it;
3. hand the good events to the agent's sink, retrying transient store
   failures forever with backoff (``stores.base.retrying``);
4. publish what happened to the outcomes topic (S2 talks back to Kafka, and
   the audit agent S3 listens).

Faust acknowledges the batch's offsets only after this returns, so nothing
is committed before it is durable.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import orjson
from faust.types import EventT

from . import metrics
from .app import app
from .codec import Rejection, decode
from .records import Event
from .stores.base import REFUSED, describe_error, retrying
from .topics import STREAM_OF_TOPIC, STREAM_OF_TYPE, STREAMS, TYPES_OF_TOPIC, deadletter_topic, outcomes_topic

log = logging.getLogger(__name__)

#: A sink step: (store name, coroutine that writes the events).
Step = Tuple[str, Callable[[Sequence[Event]], Awaitable[object]]]


Decoded = Tuple[EventT, Event]


def split(streams: Sequence[str], batch: Sequence[EventT]
          ) -> Tuple[List[Decoded], List[Tuple[EventT, Rejection]]]:
    """Decode a batch into (raw, event) pairs and (raw, rejection) pairs.

    Each message must hold an event type of its topic's stream (any of
    ``streams`` when the topic is not one of ours, as in ``test_context``).
    """
    anywhere = frozenset().union(*(STREAMS[name].event_types for name in streams))
    good: List[Decoded] = []
    bad: List[Tuple[EventT, Rejection]] = []
    for raw in batch:
        result = decode(raw.value, TYPES_OF_TOPIC.get(raw.message.topic, anywhere))
        if isinstance(result, Rejection):
            bad.append((raw, result))
        else:
            good.append((raw, result))
    return good, bad


async def handle_batch(agent: str, batch: Sequence[EventT], steps: Sequence[Step],
                       sources: Optional[Dict[str, Tuple[int, int]]] = None,
                       streams: Optional[Sequence[str]] = None) -> List[Decoded]:
    """Run one batch through decode → dead letters → sinks → outcomes.

    ``agent`` names the agent (and its stream, unless it reads several:
    ``streams``).  Returns the accepted events with their raw Kafka events
    (tables need the latter for event time).  A ``sources`` dict, if given,
    is filled before the sinks run with the (partition, offset) each event
    id was first read from in this batch.
    """
    streams = streams or (agent,)
    for stream, n in Counter(_stream_of(raw, agent) for raw in batch).items():
        metrics.events_consumed.labels(stream=stream).inc(n)
    with timed(agent, "decode"):
        pairs, bad = split(streams, batch)
    if sources is not None:
        for raw, event in pairs:
            sources.setdefault(event.event_id, (raw.message.partition, raw.message.offset))
    good = [event for _, event in pairs]
    pending = [await dead_letter(_stream_of(raw, agent), raw, why) for raw, why in bad]
    try:
        await _write(agent, good, steps, pending)
    except REFUSED as exc:  # a store refused the data itself
        log.warning("%s batch refused (%s); isolating bad events", agent, describe_error(exc))
        pairs = await _isolate(agent, pairs, steps, pending)
    with timed(agent, "kafka"):
        await asyncio.gather(*pending)  # delivered (acks=all) before offsets move
    return pairs


def _stream_of(raw: EventT, agent: str) -> str:
    return STREAM_OF_TOPIC.get(raw.message.topic, agent)


#: An event as outcome messages list it: (event id, occurred_at, type).
Listed = Tuple[str, datetime, str]


def _by_stream(events: Sequence[Event]) -> Dict[str, List[Listed]]:
    """The batch's events as outcomes list them, per stream (once for all stores)."""
    groups: Dict[str, List[Listed]] = {}
    for event in events:
        groups.setdefault(STREAM_OF_TYPE[event.TYPE], []).append(
            (event.event_id, event.occurred_at, event.TYPE))
    return groups


@contextmanager
def timed(agent: str, stage: str) -> Iterator[None]:
    """Add the time spent in the block to ``streamapp_batch_seconds``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        metrics.batch_seconds.labels(stream=agent, stage=stage).observe(
            time.perf_counter() - started)


async def _write(agent: str, good: Sequence[Event], steps: Sequence[Step], pending: list) -> None:
    if not good:
        return
    groups = _by_stream(good)
    for store, write in steps:
        with timed(agent, store):
            await retrying(store, lambda: write(good),  # noqa: B023  # awaited in this iteration
                           on_retry=lambda exc, store=store: report_retry(groups, store, exc))  # type: ignore[misc]
        for stream, listed in groups.items():
            metrics.events_stored.labels(store=store, stream=stream).inc(len(listed))
            pending.append(await report(stream, store, "stored", listed))


async def _isolate(agent: str, pairs: List[Decoded], steps: Sequence[Step],
                   pending: list) -> List[Decoded]:
    """Write events one by one; dead-letter those a store refuses.

    Faust acknowledges a batch even when the agent raises, so an exception
    must never escape: a refused event goes to the dead-letter topic with the
    store's reason, where it can be inspected and replayed.
    """
    kept: List[Decoded] = []
    for raw, event in pairs:
        try:
            await _write(agent, [event], steps, pending)
            kept.append((raw, event))
        except REFUSED as exc:
            # The class and constraint, never the message: it may quote the row.
            why = Rejection("store_refused", describe_error(exc)[:300],
                            event.TYPE, event.event_id)
            pending.append(await dead_letter(_stream_of(raw, agent), raw, why))
    return kept


#: Whether this process is a worker (``faust worker``), not an agent test context.
in_worker = False


@app.on_worker_init.connect  # type: ignore[arg-type]  # Faust passes signal= as a keyword
def _started_as_worker(sender: Any, **_: object) -> None:
    global in_worker
    in_worker = True


@contextmanager
def stop_before_commit(stream: str) -> Iterator[None]:
    """Exit the worker, uncommitted, if processing a batch raises or is cancelled.

    Faust acknowledges the events of a ``take_events`` batch when the agent
    leaves its body for any reason (the generator's ``finally``), and
    commits acknowledged offsets.  A bug must not lose data, so the worker
    exits instead (the offsets stay where they were) and its supervisor
    restarts it to replay.  The same holds for a batch cancelled half
    written: a worker told to stop (SIGTERM, a rolling restart) while a
    batch is in flight exits at once rather than let Faust acknowledge it;
    ``make cluster-chaos``'s rolling restart lost a session count that way
    (one shard's script not yet run).  Every write is idempotent, so the
    replay is harmless.
    """
    try:
        yield
    except asyncio.CancelledError:
        if not in_worker:  # an agent test's context ending: no offsets to keep
            raise
        log.warning("stopped while writing a %s batch; exiting before its offsets are "
                    "acknowledged (it will be replayed)", stream)
        logging.shutdown()
        os._exit(0)
    except BaseException:
        log.critical("unexpected error processing a %s batch; exiting before commit",
                     stream, exc_info=True)
        logging.shutdown()
        os._exit(70)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


async def dead_letter(stream: str, raw: EventT, why: Rejection) -> Awaitable[Any]:
    """Park a bad message on the dead-letter topic; returns its delivery future."""
    metrics.events_rejected.labels(stream=stream, reason=why.code).inc()
    log.info("dead letter from %s: %s (%s)", stream, why.code, why.detail)
    message = raw.message
    headers = [
        ("x-reason", why.code.encode()),
        ("x-detail", why.detail.encode("utf-8", "replace")),
        ("x-source-topic", message.topic.encode()),
        ("x-source-partition", str(message.partition).encode()),
        ("x-source-offset", str(message.offset).encode()),
        ("x-rejected-at", _now().encode()),
    ]
    value = raw.value if isinstance(raw.value, (bytes, type(None))) else bytes(raw.value)
    fut = await deadletter_topic.send(key=message.key, value=value, headers=headers)
    outcome = await outcomes_topic.send(key=stream.encode(), value=orjson.dumps({
        "status": "rejected", "stream": stream, "store": None, "reason": why.code,
        "detail": why.detail, "at": _now(),
        "events": [[why.event_id, None, why.event_type]] if why.event_id else [],
        "source": f"{message.topic}/{message.partition}/{message.offset}",
    }))
    return asyncio.gather(fut, outcome)


async def report(stream: str, store: str, status: str, listed: Sequence[Listed],
                 **extra: Any) -> Awaitable[Any]:
    """Publish one outcome message for a batch; returns its delivery future.

    ``events`` is ``[[event_id, occurred_at, type], ...]``; orjson writes
    the times as ISO 8601, as ``datetime.isoformat`` would.
    """
    body = {"status": status, "stream": stream, "store": store, "at": _now(),
            "events": listed, **extra}
    return await outcomes_topic.send(key=stream.encode(), value=orjson.dumps(body))


async def report_retry(groups: Dict[str, List[Listed]], store: str, exc: BaseException) -> None:
    try:
        for stream, listed in groups.items():
            await report(stream, store, "retried", listed,
                         reason=type(exc).__name__, detail=describe_error(exc)[:300])
    except Exception:  # reporting must never turn a retry into a crash
        log.exception("could not publish retry outcome")
