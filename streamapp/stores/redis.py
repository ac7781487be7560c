"""Redis: viewing sessions, live counters, leaderboards, rankings, cache.

The same code runs on a standalone Redis and on Redis Cluster
(``REDIS_CLUSTER=true``).  On a cluster a script, a transaction or a
multi-key command may only touch keys of one hash slot, so keys that are used
together share a ``{hash tag}``:

* **Counter shards** ``{s00}`` .. ``{sNN}`` (``REDIS_SHARDS``, 16): each holds
  the dedupe claims of the events it counted, its per-type event counts, and
  the viewing sessions of the titles that hash to it (a session hash, the
  shard's "now watching" sets and its "most watched" counts).  A batch costs
  one script call per shard it touches, all sent at once.  Increments stay
  exact because the claim (``SET NX`` on the event id) and the increment run
  in one script on one slot.  What shards: claims, counts and sessions spread
  over up to ``REDIS_SHARDS`` masters.  What does not: one shard is one slot,
  so a cluster gains nothing past that many masters for these keys, and
  deployment-wide numbers are sums over the shards (one small read each).
* **Window boards** ``{win}``: the tumbling and 5-minute pane boards, and the
  hour's board that ``ZUNIONSTORE`` builds from its panes.  They are small
  (titles rated in the last two hours) and live in one slot.
* Everything else is a single-key structure and spreads by its own name: the
  all-time, best-rated, per-genre and most-watched boards (``ZADD`` of
  absolute scores, idempotent), and the catalog cache (multi-gets are
  non-atomic on a cluster, which a cache does not need).

Updates are idempotent by construction where they can be (``HSET`` of a
newer state, ``ZADD GT``, ``ZREM``, absolute ``ZADD``); the few increments
run only when the event's claim is new, so a replayed event adds nothing.

On a cluster, pipelines of durable writes wait for a replica to hold them
(``redis_replicas``); the catalog cache does not (it is refilled from
MongoDB).

The key layout is in ``redis_keys``, the Lua scripts in ``redis_scripts``.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
    cast,
)

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from ..records import Event
from .base import StoreBase
from .redis_keys import DEFAULT_PREFIX, Keys
from .redis_replicas import ReplicaAcks
from .redis_scripts import COUNT, SESSIONS

Client = Union[aioredis.Redis, RedisCluster]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)



def _mark(at: datetime, event_id: str) -> str:
    """An event's place in the newest-wins order, comparable as a string."""
    return f"{(at - _EPOCH) // timedelta(microseconds=1):016d}|{event_id}"


class RedisStore(StoreBase):
    name = "redis"

    def __init__(self, url: str, *, session_ttl_s: int, dedupe_ttl_s: int,
                 cache_ttl_s: int, cluster: bool = False, prefix: str = DEFAULT_PREFIX,
                 shards: int = 16) -> None:
        self._url = url
        self._cluster = cluster
        self._client: Optional[Client] = None
        self.keys = Keys(prefix, shards)
        self.session_ttl_s = session_ttl_s
        self.dedupe_ttl_s = dedupe_ttl_s
        self.cache_ttl_s = cache_ttl_s
        self._replicas = ReplicaAcks()

    @property
    def client(self) -> Client:
        if self._client is None:
            if self._cluster:
                # Slot maps are refreshed on MOVED; a failed-over master shows
                # up as connection errors for a few seconds, which the sinks
                # retry (``stores.base``).
                self._client = RedisCluster.from_url(
                    self._url, socket_timeout=5, socket_connect_timeout=3,
                    health_check_interval=10, cluster_error_retry_attempts=3)
            else:
                self._client = aioredis.Redis.from_url(
                    self._url, socket_timeout=5, socket_connect_timeout=3,
                    health_check_interval=10)
        return self._client

    def _durable(self, keys: Iterable[str], results: Optional[List[Any]] = None) -> Any:
        """A pipeline of durable writes to ``keys``, replicated on a cluster (``redis_replicas``)."""
        return self._replicas.pipeline(self.client, keys, results)

    async def connect(self) -> None:
        await self.ping()  # the client connects on its first command

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def write_sessions(self, events: Sequence[Event]) -> int:
        """Apply viewing-session events: one script call per shard, sent at once."""
        by_shard: Dict[int, List[tuple]] = {}
        for e in events:
            if e.TYPE == "session.started":
                extra: Any = e.device
            elif e.TYPE == "session.ended":
                extra = e.watched_s
            else:
                extra = e.position_s
            by_shard.setdefault(self.keys.shard_of(e.movie_id), []).append((
                e.TYPE, e.event_id, e.session_id, e.movie_id, e.user_id,
                e.occurred_at.isoformat(), e.occurred_at.timestamp(), extra,
                _mark(e.occurred_at, e.event_id)))
        if not by_shard:
            return 0
        results = await self._per_shard(SESSIONS, {
            shard: (self.session_ttl_s, self.dedupe_ttl_s, orjson.dumps(rows))
            for shard, rows in by_shard.items()})
        watched = {movie.decode(): float(score)
                   for flat in results for movie, score in zip(flat[::2], flat[1::2])}
        if watched:
            # Each title's count lives in one shard, so the shard's count is
            # the title's: GT keeps the board right in any order, and a
            # replayed batch re-mirrors what a crash may have left out.
            async with self._durable([self.keys.most_watched]) as pipe:
                pipe.zadd(self.keys.most_watched, watched, gt=True)
        return len(events)

    async def count_events(self, events: Sequence[Event]) -> int:
        """Count events once each (for streams whose data lives elsewhere)."""
        by_shard: Dict[int, List[Tuple[str, str]]] = {}
        for e in events:
            by_shard.setdefault(self.keys.shard_of(e.event_id), []).append((e.event_id, e.TYPE))
        if not by_shard:
            return 0
        counted = await self._per_shard(COUNT, {
            shard: (self.dedupe_ttl_s, orjson.dumps(pairs)) for shard, pairs in by_shard.items()})
        return sum(int(n) for n in counted)

    async def _per_shard(self, script: str, args: Mapping[int, tuple]) -> List[Any]:
        """Run ``script`` once per shard, all in one pipeline (one round trip
        per node); KEYS[1] is the shard's counts hash, ARGV[1] its prefix.

        EVAL rather than EVALSHA: a cluster pipeline refuses EVALSHA, and
        redis-py's cluster client fails concurrent first calls of a script;
        the server caches the compiled script either way.
        """
        results: List[Any] = []
        async with self._durable([self.keys.counts(shard) for shard in args], results) as pipe:
            for shard, rest in args.items():
                pipe.execute_command("EVAL", script, 1, self.keys.counts(shard),
                                     self.keys.shard(shard), *rest)
        return results

    async def counts(self) -> Dict[str, int]:
        """Events counted once each, per type, and watched_seconds: summed over the shards."""
        async with self.client.pipeline(transaction=False) as pipe:
            for shard in range(self.keys.shards):
                pipe.hgetall(self.keys.counts(shard))
            per_shard = await pipe.execute()
        totals: Dict[str, int] = {}
        for values in per_shard:
            for name, n in values.items():
                totals[name.decode()] = totals.get(name.decode(), 0) + int(n)
        return totals

    async def forget_titles(self, movie_ids: Iterable[str]) -> None:
        """Invalidate cached catalog entries after a catalog write."""
        keys = [self.keys.catalog(m) for m in set(movie_ids)]
        if keys:
            await self.client.delete(*keys)  # split per slot on a cluster

    async def now_watching(self, movie_id: Optional[str] = None) -> int:
        """Sessions seen within the session TTL (ended ones are removed)."""
        since = time.time() - self.session_ttl_s
        async with self.client.pipeline(transaction=False) as pipe:
            for key in self.keys.watching(movie_id):
                pipe.zcount(key, since, "+inf")
            return sum(await pipe.execute())

    async def prune_watching(self) -> None:
        """Drop sessions that went silent (no heartbeat within the TTL)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for key in self.keys.watching():
                pipe.zremrangebyscore(key, "-inf", time.time() - self.session_ttl_s)
            await pipe.execute()

    async def mirror(self, scores: Dict[str, Dict[str, float]], expire_s: Dict[str, int],
                     remove: Optional[Dict[str, List[str]]] = None,
                     unions: Optional[Dict[str, List[str]]] = None) -> None:
        """Set leaderboard scores to absolute values (idempotent), one pipeline;
        ``remove`` takes members off boards they no longer belong on, and each
        board in ``unions`` is rebuilt as the sum of its source boards (which
        share its hash tag)."""
        written = [*(remove or {}), *(key for key, board in scores.items() if board),
                   *(unions or {})]
        async with self._durable(written) as pipe:
            for key, members in (remove or {}).items():
                pipe.zrem(key, *members)
            for key, board in scores.items():
                if board:
                    pipe.zadd(key, board)
                    if key in expire_s:
                        pipe.expire(key, expire_s[key])
            for key, sources in (unions or {}).items():
                pipe.zunionstore(key, sources)
                if key in expire_s:
                    pipe.expire(key, expire_s[key])

    async def top(self, key: str, n: int = 10) -> List[Tuple[str, float]]:
        rows = cast(List[Tuple[bytes, float]],
                    await self.client.zrevrange(key, 0, n - 1, withscores=True))
        return [(m.decode(), s) for m, s in rows]

    async def rank(self, key: str, member: str) -> Optional[int]:
        """1-based rank of ``member`` on a leaderboard, None if absent."""
        r = cast(Optional[int], await self.client.zrevrank(key, member))
        return None if r is None else r + 1

    async def get_many(self, keys: Sequence[str]) -> List[Optional[bytes]]:
        """Values of many keys; one MGET, or one per slot on a cluster (not atomic)."""
        values: List[Optional[bytes]]
        if self._cluster:
            values = await self.client.mget_nonatomic(list(keys))  # type: ignore[union-attr]  # a RedisCluster
        else:
            values = await self.client.mget(list(keys))  # type: ignore[assignment]  # bytes: no decode_responses
        return values

    async def cached_titles(self, movie_ids: Sequence[str]) -> Dict[str, Optional[dict]]:
        """Titles in the read-through cache (None where not cached), one MGET."""
        found = await self.get_many([self.keys.catalog(m) for m in movie_ids])
        return {m: None if raw is None else orjson.loads(raw) for m, raw in zip(movie_ids, found)}

    async def cache_titles(self, docs: Mapping[str, dict]) -> None:
        """Put titles in the read-through cache, one pipeline."""
        async with self.client.pipeline(transaction=False) as pipe:
            for movie_id, doc in docs.items():
                pipe.set(self.keys.catalog(movie_id), orjson.dumps(doc, default=str),
                         ex=self.cache_ttl_s)
            await pipe.execute()

    async def cached_title(self, movie_id: str,
                           load: Callable[[str], Awaitable[Optional[dict]]]) -> Optional[dict]:
        """Read-through cache: Redis first, else ``load`` and remember it."""
        cached = await self.client.get(self.keys.catalog(movie_id))
        if cached is not None:
            hit: dict = orjson.loads(cached)
            return hit
        doc = await load(movie_id)
        if doc is not None:
            await self.cache_titles({movie_id: doc})
        return doc
