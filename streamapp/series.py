"""Time series of the whole deployment for the dashboard's charts.

Every ``SERIES_SAMPLE_S`` seconds one worker of the deployment takes a
sample and appends it to one Redis list that every worker reads:

* **who samples**: each worker's timer tries to claim the current slot
  (``SET NX`` on ``<prefix>series:claim:<slot>``, expiring after a few
  slots); the one that gets it samples, the others do nothing.  So there is
  one sample per slot whatever the number of workers, and sampling goes on
  as long as one worker lives;
* **what a sample holds**: the consumer group's committed offset and lag per
  stream (Kafka, via ``deployment.offsets``, as ``/api/stats/`` and
  ``/api/health/`` count them), the number of live workers (heartbeats),
  each store's ping time seen from the sampling worker, and the ratings
  counted in the current and the previous tumbling window (the sum of their
  Redis boards, which the rating tables mirror from every worker);
* **bounded**: ``RPUSH`` then ``LTRIM`` to the last ``SERIES_KEEP_S`` worth of
  samples (360 at the defaults, about 150 KB).

Events per second are computed when read, from consecutive samples'
committed offsets, so they count what the deployment processed (committed),
not what one worker saw.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional

import orjson

from .config import Settings
from .deployment import Deployment
from .stores import Stores
from .topics import STREAM_OF_TOPIC, STREAMS

log = logging.getLogger(__name__)

#: How long a sample waits for one store's ping.
PING_TIMEOUT_S = 2.0


class Series:
    def __init__(self, cfg: Settings, stores: Stores, deployment: Deployment) -> None:
        self.stores = stores
        self.deployment = deployment
        self.every_s = max(0.5, float(cfg.series_sample_s))
        self.keep = max(2, int(cfg.series_keep_s / self.every_s))
        self.window_s = cfg.tumbling_window_s
        prefix = stores.redis.keys.prefix
        self.key = f"{prefix}series"
        self._claim = f"{prefix}series:claim:"

    async def maybe_sample(self, url: str, now: Optional[float] = None) -> bool:
        """Take this slot's sample if no other worker has; True if this one did."""
        now = time.time() if now is None else now
        slot = int(now // self.every_s)
        redis = self.stores.redis.client
        if not await redis.set(self._claim + str(slot), url, nx=True,
                               ex=max(2, int(self.every_s * 4))):
            return False
        sample = await self.sample(slot * self.every_s)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.rpush(self.key, orjson.dumps(sample))
            pipe.ltrim(self.key, -self.keep, -1)
            await pipe.execute()
        return True

    async def sample(self, at: float) -> Dict[str, Any]:
        offsets = await self.deployment.offsets(sorted(STREAM_OF_TOPIC))
        consumed = {name: 0 for name in STREAMS}
        lag = {name: 0 for name in STREAMS}
        for tp, (committed, end) in offsets.items():
            stream = STREAM_OF_TOPIC.get(tp.topic)
            if stream is not None:
                consumed[stream] += committed or 0
                lag[stream] += max(0, end - (committed or 0))
        probes: Dict[str, Callable[[], Awaitable[Any]]] = {
            "postgres": self.stores.postgres.ping, "mongodb": self.stores.mongo.ping,
            "redis": self.stores.redis.ping}
        if self.stores.audit.enabled:
            probes["audit"] = self.stores.audit.ping
        latencies = await asyncio.gather(*(_latency(p) for p in probes.values()))
        try:
            workers: Optional[int] = len(await self.deployment.workers())
        except Exception:
            workers = None
        return {"at": at, "consumed": consumed, "lag": lag,
                "latency_ms": dict(zip(probes, latencies)), "workers": workers,
                "windows": await self.window_totals(at)}

    async def window_totals(self, at: float) -> Dict[str, int]:
        """Ratings in the tumbling window holding ``at`` and the one before,
        by window start (epoch s): the sums of their leaderboards."""
        from tables.ratings import TUMBLING  # the tables' label of the window

        size = self.window_s
        starts = [int(at // size * size) - size, int(at // size * size)]
        keys = self.stores.redis.keys
        # one hash tag ({win}): a pipeline even on a cluster
        async with self.stores.redis.client.pipeline(transaction=False) as pipe:
            for start in starts:
                pipe.zrange(keys.window(TUMBLING, start), 0, -1, withscores=True)
            boards = await pipe.execute()
        return {str(start): int(sum(score for _, score in board))
                for start, board in zip(starts, boards)}

    async def read(self, seconds: float) -> List[Dict[str, Any]]:
        """The samples of the last ``seconds`` (one more, for the first rate)."""
        n = min(self.keep, int(seconds / self.every_s) + 2)
        raw = await self.stores.redis.client.lrange(self.key, -n, -1)
        samples = [orjson.loads(r) for r in raw]
        since = time.time() - seconds - self.every_s
        return [s for s in samples if s["at"] >= since]


async def _latency(ping: Callable[[], Awaitable[Any]]) -> Optional[float]:
    """Milliseconds a store took to answer a ping; None if it failed or timed out."""
    started = time.perf_counter()
    try:
        await asyncio.wait_for(ping(), PING_TIMEOUT_S)
    except Exception:
        return None
    return round((time.perf_counter() - started) * 1000, 2)


def rates(samples: List[Dict[str, Any]]) -> Dict[str, List[Optional[float]]]:
    """Events per second per stream between consecutive samples (None for the
    first sample, and where a counter went back: a topic recreated)."""
    out: Dict[str, List[Optional[float]]] = {name: [None] for name in STREAMS}
    for before, after in zip(samples, samples[1:]):
        dt = after["at"] - before["at"]
        for name in STREAMS:
            delta = after["consumed"].get(name, 0) - before["consumed"].get(name, 0)
            out[name].append(round(delta / dt, 2) if dt > 0 and delta >= 0 else None)
    if not samples:
        return {name: [] for name in STREAMS}
    return out


def windows(samples: List[Dict[str, Any]], since: float) -> Dict[str, List[int]]:
    """Ratings per tumbling window from ``since`` on: each window's latest count."""
    latest: Dict[int, int] = {}
    for sample in samples:
        for start, n in sample.get("windows", {}).items():
            latest[int(start)] = n
    starts = sorted(s for s in latest if s >= since)
    return {"start": starts, "ratings": [latest[s] for s in starts]}


def _series() -> Series:
    from .config import settings
    from .deployment import deployment
    from .stores import stores

    return Series(settings, stores, deployment)


series = _series()
