"""``/api/health/`` and ``/api/stats/``: the stores, the consumer group and
the live workers, whichever worker answers."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional

from faust.web import Request, Response

from ..app import app
from ..connections import redact
from ..deployment import add_up, deployment, owners
from ..stores import stores
from ..topics import STREAM_OF_TOPIC, STREAMS
from .api import STORE_TIMEOUT_S, ApiView, StoreUnavailable, from_store, utc

#: How long the health check waits for each store.
PING_TIMEOUT_S = 2.0
#: Stores that must answer for the worker to be healthy (audit is optional).
REQUIRED_STORES = tuple(store.name for store in stores.required())


async def _probe(name: str, ping: Callable[[], Awaitable[bool]]) -> Dict[str, Any]:
    started = time.perf_counter()
    try:
        ok = bool(await asyncio.wait_for(ping(), PING_TIMEOUT_S))
        result: Dict[str, Any] = {"ok": ok}
    except TimeoutError:
        result = {"ok": False, "error": f"no answer in {PING_TIMEOUT_S}s"}
    except Exception as exc:  # any failure means "not reachable", never a 500
        result = {"ok": False, "error": redact(f"{type(exc).__name__}: {exc}")[:300]}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


async def store_health() -> Dict[str, Dict[str, Any]]:
    """Ping every store concurrently, each with its own short timeout."""
    probes = {store.name: store.ping for store in stores.all()
              if store is not stores.audit or stores.audit.enabled}
    results = await asyncio.gather(*(_probe(name, ping) for name, ping in probes.items()))
    health = dict(zip(probes, results))
    if not stores.audit.enabled:
        health["audit"] = {"ok": False, "error": "disabled (no ELASTICSEARCH_URL)"}
    for name, result in health.items():
        result["required"] = name in REQUIRED_STORES
    return health


def _internal(topic: str) -> bool:
    """Topics not consumed for processing: table changelogs (read during
    recovery only, never committed) and Faust's assignor topic."""
    return topic.endswith("-changelog") or "__assignor" in topic


def local_partitions() -> Dict[str, List[int]]:
    """The source partitions this worker owns, per topic."""
    owned: Dict[str, List[int]] = {}
    for tp in sorted(app.consumer.assignment()):
        if not _internal(tp.topic):
            owned.setdefault(tp.topic, []).append(tp.partition)
    return owned


async def consumer_lag(workers: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Lag of the whole consumer group, per topic-partition, from Kafka.

    * ``highwater``: the partition's end offset (the last stable offset
      under exactly-once, so committed transaction markers count as one
      offset);
    * ``committed``: the group's next offset to read after its last commit
      (None before the first);
    * ``lag`` = ``highwater - committed`` (a partition never committed lags
      by its whole length);
    * ``owner``: the live worker that reports the partition as its own
      (None while partitions move).

    Table changelogs are left out (Faust reads them only to recover tables
    and never commits them).  Values are at most ``OFFSETS_TTL_S`` old.
    """
    offsets = await deployment.offsets(sorted(STREAM_OF_TOPIC))
    owned_by = owners(workers)
    topics: Dict[str, Dict[str, Any]] = {}
    for tp, (committed, end) in sorted(offsets.items()):
        lag = end - (committed or 0)
        entry = topics.setdefault(tp.topic, {"lag": 0, "partitions": {}})
        entry["partitions"][str(tp.partition)] = {
            "highwater": end, "committed": committed, "lag": lag,
            "owner": owned_by.get((tp.topic, tp.partition))}
        entry["lag"] += max(lag, 0)
    return topics


async def live_workers() -> List[Dict[str, Any]]:
    workers: List[Dict[str, Any]] = await from_store("redis", deployment.workers(),
                                                     timeout=PING_TIMEOUT_S)
    return workers


class HealthView(ApiView):
    """Every store's reachability, the whole group's lag from Kafka, the live
    workers, and the partitions of the worker that answers."""

    async def handle(self, request: Request) -> Response:
        health = await store_health()
        try:
            workers: Optional[List[Dict[str, Any]]] = await live_workers()
        except StoreUnavailable:
            workers = None  # Redis is down: its health entry says so
        try:
            lag: Dict[str, Any] = {"group": deployment.group_id,
                                   "topics": await asyncio.wait_for(
                                       consumer_lag(workers or []), STORE_TIMEOUT_S)}
        except Exception as exc:  # Kafka unreachable, group not created yet ...
            lag = {"group": deployment.group_id, "topics": {},
                   "error": f"{type(exc).__name__}: {exc}"[:300]}
        try:
            mine: Dict[str, Any] = {"url": str(app.conf.canonical_url),
                                    "partitions": local_partitions()}
        except Exception as exc:  # consumer not started yet, rebalancing ...
            mine = {"url": str(app.conf.canonical_url), "partitions": {},
                    "error": f"{type(exc).__name__}: {exc}"[:300]}
        ok = all(health[name]["ok"] for name in REQUIRED_STORES)
        return self.json({"status": "ok" if ok else "degraded", "stores": health,
                          "consumer": lag, "workers": workers, "worker": mine,
                          "at": utc(time.time())},
                         status=200 if ok else 503)


class StatsView(ApiView):
    """Numbers of the whole deployment, whichever worker answers.

    ``events_consumed`` per stream is what the consumer group has committed
    (Kafka offsets: exact, and unchanged by restarts); ``stored``,
    ``rejected`` and ``retries`` add up the live workers' counters (each
    since its worker started); ``workers`` lists them.
    """

    async def handle(self, request: Request) -> Response:
        offsets = await from_store("kafka", deployment.offsets(sorted(STREAM_OF_TOPIC)))
        per_stream = {name: 0 for name in STREAMS}
        for tp, (committed, _) in offsets.items():
            stream = STREAM_OF_TOPIC.get(tp.topic)
            if stream is not None:
                per_stream[stream] += committed or 0
        try:
            workers: List[Dict[str, Any]] = await live_workers()
        except StoreUnavailable:
            workers = []  # the rest of the page is still worth showing
        try:
            watching: Optional[int] = await from_store(
                "redis", stores.redis.now_watching(), timeout=PING_TIMEOUT_S)
        except StoreUnavailable:
            watching = None
        return self.json({
            "at": time.time(),
            "events_consumed": per_stream,
            "events_total": sum(per_stream.values()),
            "stored": add_up(workers, "stored"),
            "rejected": add_up(workers, "rejected"),
            "retries": add_up(workers, "retries"),
            "now_watching": watching,
            "workers": [{"url": w["url"], "age_s": w["age_s"],
                         "partitions": sum(len(ps) for t, ps in w["partitions"].items()
                                           if not _internal(t))}
                        for w in workers],
        })
