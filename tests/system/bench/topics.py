"""What the Kafka topics tell: when outcomes were sent, the audit trail's lag, dead letters."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Dict, List, Optional, Tuple

from tests.harness import settings_for
from tests.system.bench.common import STREAM_NAMES, cancel
from tests.system.bench.procs import Process


async def topic_partitions(consumer, *topics: str) -> list:
    """Every partition of ``topics``, asking the broker again if the consumer's
    metadata does not know them all yet (topics made since it started)."""
    from aiokafka import TopicPartition

    def known() -> list:
        return [TopicPartition(t, p) for t in topics
                for p in sorted(consumer.partitions_for_topic(t) or ())]
    tps = known()
    if len({tp.topic for tp in tps}) < len(set(topics)):
        await consumer._client.force_metadata_update()
        tps = known()
    return tps


async def last_outcome_at(cfg, since: float) -> Optional[float]:
    """Kafka timestamp of the newest outcome message sent after ``since``."""
    from aiokafka import AIOKafkaConsumer

    from streamapp.connections import kafka_client_options

    consumer = AIOKafkaConsumer(**kafka_client_options(cfg), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, cfg.output_topic("outcomes"))
        if not tps:
            return None
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
        latest = None
        for tp in tps:
            if starts[tp] is None or ends[tp] == 0:
                continue
            consumer.seek(tp, ends[tp] - 1)  # the partition's newest record
            record = await consumer.getone(tp)
            latest = max(latest or 0, record.timestamp / 1000)
        return latest
    finally:
        await consumer.stop()


class OutcomeWatcher:
    """Reads the outcomes topic from its current end: when each event was stored where.

    S2 publishes one outcome per batch and store right after the write, so
    the record's Kafka timestamp (set by the worker's producer when it sends)
    minus the event's ``occurred_at`` is the latency to that store, and the
    largest of an event's latencies is the time until it was in every store
    its agent writes (whatever the agents' steps are).
    """

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.latency: Dict[Tuple[str, str], List[Tuple[float, float]]] = {}
        #: event id -> (occurred_at, latency to the last store seen so far)
        self.done: Dict[str, Tuple[float, float]] = {}
        self._task: Optional[asyncio.Task] = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from streamapp.connections import kafka_client_options

        self.consumer = AIOKafkaConsumer(**kafka_client_options(self.cfg),
                                         enable_auto_commit=False)
        await self.consumer.start()
        tps = await topic_partitions(self.consumer, self.cfg.output_topic("outcomes"))
        self.consumer.assign(tps)
        ends = await self.consumer.end_offsets(tps)
        for tp in tps:
            self.consumer.seek(tp, ends[tp])
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        import orjson

        while True:
            batches = await self.consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    body = orjson.loads(record.value)
                    if body.get("status") != "stored":
                        continue
                    stream, store = body.get("stream"), body.get("store")
                    at = record.timestamp / 1000
                    series = self.latency.setdefault((stream, store), [])
                    for event_id, occurred_at, _ in body.get("events", []):
                        t = datetime.fromisoformat(occurred_at).timestamp()
                        series.append((t, at - t))
                        before = self.done.get(event_id)
                        if before is None or at - t > before[1]:
                            self.done[event_id] = (t, at - t)

    async def stop(self) -> None:
        await cancel(self._task)
        await self.consumer.stop()


class AuditLag:
    """Messages the worker's audit consumer (group ``<app id>-audit``) has yet to index."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.topics = [cfg.topic(n) for n in STREAM_NAMES] + [cfg.output_topic("deadletter"),
                                                              cfg.output_topic("outcomes")]

    async def __aenter__(self) -> AuditLag:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        from streamapp.connections import kafka_client_options

        self.admin = AIOKafkaAdminClient(**kafka_client_options(self.cfg))
        self.consumer = AIOKafkaConsumer(**kafka_client_options(self.cfg))
        await self.admin.start()
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def lag(self) -> int:
        tps = await topic_partitions(self.consumer, *self.topics)
        ends = await self.consumer.end_offsets(tps)
        committed = await self.admin.list_consumer_group_offsets(f"{self.cfg.app_id}-audit")
        lag = 0
        for tp in tps:
            meta = committed.get(tp)
            lag += ends[tp] - (meta.offset if meta is not None and meta.offset >= 0 else 0)
        return lag


async def wait_for_audit(env: Dict[str, str], worker: Process, limit: float) -> dict:
    """Let the in-worker audit trail finish the backlog before measuring latency."""
    started = time.time()
    async with AuditLag(settings_for(env)) as audit:
        lag = first = await audit.lag()
        while lag > 0 and time.time() - started < limit:
            if worker.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {worker.tail()}")
            await asyncio.sleep(1.0)
            lag = await audit.lag()
    return {"audit_lag_when_stores_durable": first, "audit_lag_at_start": lag,
            "waited_for_audit_s": round(time.time() - started, 1),
            "audit_caught_up": lag == 0}


async def deadletter_size(env: Dict[str, str]) -> int:
    from streamapp.tally import topic_size

    cfg = settings_for(env)
    return await topic_size(cfg.output_topic("deadletter"), cfg.kafka_bootstrap, cfg)
