"""The whole deployment as any one worker can see it: Kafka offsets and a
heartbeat of every worker in Redis.

A worker's own counters and assignment describe one process; a user who
runs several workers asks about all of them, from whichever worker answers.
So the web views take:

* **consumption and lag from Kafka**: the consumer group's committed offsets
  against each partition's end offset, for every partition of every source
  topic, whoever owns it.  Offsets survive restarts and rebalances, so these
  numbers never drop when a worker dies;
* **everything else from heartbeats**: every ``HEARTBEAT_S`` each worker
  writes its URL, assigned partitions and counters (stored, rejected,
  retried since it started) into one Redis hash, and the views add up the
  entries younger than ``STALE_S``.  A worker that died drops out of the sum
  once its entry is stale.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any, Dict, List, Optional, Tuple

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from . import metrics
from .config import Settings
from .connections import kafka_client_options
from .stores import Stores

log = logging.getLogger(__name__)

#: How often a worker writes its heartbeat.
HEARTBEAT_S = 2.0
#: A heartbeat older than this is a worker that stopped or died.
STALE_S = 10.0
#: Offsets are read from Kafka at most this often, whatever the request rate.
OFFSETS_TTL_S = 1.0


class Deployment:
    """Kafka offsets of the consumer group and the live workers' heartbeats."""

    def __init__(self, cfg: Settings, stores: Stores, group_id: str) -> None:
        self.cfg = cfg
        self.stores = stores
        self.group_id = group_id
        self._admin: Optional[AIOKafkaAdminClient] = None
        self._consumer: Optional[AIOKafkaConsumer] = None
        self._offsets: Tuple[float, Dict[TopicPartition, Tuple[Optional[int], int]]] = (0.0, {})
        self._lock = asyncio.Lock()

    # --- Kafka ------------------------------------------------------------------

    async def _clients(self) -> Tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None:
            admin = AIOKafkaAdminClient(**kafka_client_options(self.cfg), request_timeout_ms=5000)
            await admin.start()
            self._admin = admin
        if self._consumer is None:
            consumer = AIOKafkaConsumer(**kafka_client_options(self.cfg),
                                        enable_auto_commit=False, request_timeout_ms=5000)
            await consumer.start()
            self._consumer = consumer
        return self._admin, self._consumer

    async def offsets(self, topics: List[str]) -> Dict[TopicPartition, Tuple[Optional[int], int]]:
        """``{partition: (committed, end)}`` for every partition of ``topics``.

        ``committed`` is the group's next offset to read (None before its
        first commit); ``end`` the partition's end offset.  Cached for
        ``OFFSETS_TTL_S``, so a dashboard polling every worker costs Kafka
        one round of requests a second.
        """
        async with self._lock:
            at, cached = self._offsets
            if time.monotonic() - at < OFFSETS_TTL_S and cached:
                return cached
            try:
                admin, consumer = await self._clients()
                partitions = []
                for topic in topics:
                    known = consumer.partitions_for_topic(topic)
                    if not known:
                        await consumer._client.force_metadata_update()
                        known = consumer.partitions_for_topic(topic) or set()
                    partitions += [TopicPartition(topic, p) for p in sorted(known)]
                committed = await admin.list_consumer_group_offsets(self.group_id)
                ends = await consumer.end_offsets(partitions) if partitions else {}
            except Exception:
                await self.close()  # reconnect next time (a broker may have moved)
                raise
            result = {}
            for tp in partitions:
                mark = committed.get(tp)
                result[tp] = (mark.offset if mark is not None and mark.offset >= 0 else None,
                              ends[tp])
            self._offsets = (time.monotonic(), result)
            return result

    async def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        for client in (consumer, admin):
            if client is not None:
                try:
                    await (client.stop() if client is consumer else client.close())  # type: ignore[union-attr]
                except Exception:  # closing a broken client must not hide the cause
                    pass

    # --- heartbeats ----------------------------------------------------------------

    async def beat(self, url: str, assigned: Dict[str, List[int]]) -> None:
        """Write this worker's heartbeat (one HSET)."""
        body = {
            "url": url, "host": socket.gethostname(), "pid": os.getpid(), "at": time.time(),
            "partitions": assigned,
            "stored": _ints(metrics.totals(metrics.events_stored, "store")),
            "rejected": _ints(metrics.totals(metrics.events_rejected, "reason")),
            "retries": _ints(metrics.totals(metrics.store_retries, "store")),
        }
        await self.stores.redis.client.hset(self.stores.redis.keys.workers, url,
                                            orjson.dumps(body))

    async def leave(self, url: str) -> None:
        """Take this worker off the list at a clean shutdown."""
        await self.stores.redis.client.hdel(self.stores.redis.keys.workers, url)

    async def workers(self) -> List[Dict[str, Any]]:
        """The live workers' heartbeats, oldest first; stale entries are removed."""
        key = self.stores.redis.keys.workers
        entries = await self.stores.redis.client.hgetall(key)
        now, live, stale = time.time(), [], []  # type: float, List[Dict[str, Any]], List[Dict[str, Any]]
        for _field, raw in entries.items():
            beat = orjson.loads(raw)
            (live if now - beat["at"] < STALE_S else stale).append(beat)
        if stale:
            await self.stores.redis.client.hdel(key, *(b["url"] for b in stale))
        for beat in live:
            beat["age_s"] = round(now - beat.pop("at"), 1)
        return sorted(live, key=lambda b: b["url"])


def _ints(values: Dict[str, float]) -> Dict[str, int]:
    return {k: int(v) for k, v in values.items()}


def add_up(beats: List[Dict[str, Any]], field: str) -> Dict[str, int]:
    """Sum one counter family (``stored``, ``rejected``, ``retries``) over workers."""
    total: Dict[str, int] = {}
    for beat in beats:
        for name, n in beat.get(field, {}).items():
            total[name] = total.get(name, 0) + int(n)
    return total


def owners(beats: List[Dict[str, Any]]) -> Dict[Tuple[str, int], str]:
    """Which live worker reported each (topic, partition) as its own."""
    found: Dict[Tuple[str, int], str] = {}
    for beat in beats:
        for topic, partitions in beat.get("partitions", {}).items():
            for p in partitions:
                found[(topic, int(p))] = beat["url"]
    return found


def _deployment() -> Deployment:
    from .config import settings
    from .stores import stores

    # Faust's consumer group is the app id.
    return Deployment(settings, stores, settings.app_id)


deployment = _deployment()
