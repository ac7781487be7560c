"""Redis: viewing sessions, live counters, leaderboards, rankings, cache.

Everything for one batch goes in one pipeline (one round trip).  Updates are
idempotent by construction where they can be (``HSET``, ``ZADD GT``,
``ZREM``, absolute ``ZADD`` of leaderboard scores mirrored from the tables);
the few increments (events counted, "most watched") run in a Lua script that
first claims the event id with ``SET NX``, so a replayed event adds nothing.
Sessions and event counts are one script call per batch: the client's work
(packing one command per field write) was the hot path, not the server's.

The scripts touch keys they build themselves, which standalone Redis (and
Sentinel) allows; a Redis Cluster deployment would need hash tags per
batch or per-event calls instead.

Key layout (all under the ``sa:`` prefix):
    sa:session:<sid>             hash, expires SESSION_TTL_S after last event
    sa:watching                  zset sid -> last seen (epoch s): "now watching"
    sa:watching:<movie>          zset sid -> last seen, per title
    sa:lb:watched                zset movie -> sessions started
    sa:lb:rated:all              zset movie -> ratings (all time)
    sa:lb:rated:<window>:<start> zset movie -> ratings in that window (the
                                 hour's board is the union of its 5m panes)
    sa:lb:best                   zset movie -> average score (min votes)
    sa:lb:genre:<genre>          zset movie -> ratings (all time) in a genre
    sa:count:<event type>        events counted once each
    sa:catalog:<movie>           cached title JSON (read-through)
    sa:seen:<event_id>           dedupe claims, expire after DEDUPE_TTL_S
"""
from __future__ import annotations

import time
from typing import Awaitable, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import orjson
import redis.asyncio as aioredis

from ..records import Event

P = "sa:"
WATCHING = P + "watching"
MOST_WATCHED = P + "lb:watched"
RATED_ALL = P + "lb:rated:all"
BEST_RATED = P + "lb:best"

# Sessions, a whole batch per call: ARGV = prefix, session ttl, dedupe ttl,
# and the events as one JSON array of 8-value arrays.  Field writes are
# idempotent (HSET, ZADD GT, ZREM); increments run only when the event's
# dedupe claim (SET NX) is new.  One argument for the batch: the client packed
# each of 8 arguments per event separately (12 us of its CPU an event; one
# orjson array costs 5), and the server parses one string instead of 2,400.
_SESSIONS = """
local p, session_ttl, dedupe_ttl = ARGV[1], ARGV[2], ARGV[3]
local counted = 0
for _, e in ipairs(cjson.decode(ARGV[4])) do
  local kind, eid, sid, movie = e[1], e[2], e[3], e[4]
  local user, at, seen, extra = e[5], e[6], e[7], e[8]
  local skey, per_title = p .. 'session:' .. sid, p .. 'watching:' .. movie
  if kind == 'session.ended' then
    redis.call('HSET', skey, 'state', 'ended', 'watched_s', extra, 'ended_at', at)
    redis.call('ZREM', p .. 'watching', sid)
    redis.call('ZREM', per_title, sid)
  else
    if kind == 'session.started' then
      redis.call('HSET', skey, 'user_id', user, 'movie_id', movie, 'last_seen', at,
                 'state', 'playing', 'device', extra, 'started_at', at)
    else
      redis.call('HSET', skey, 'user_id', user, 'movie_id', movie, 'last_seen', at,
                 'position_s', extra)
    end
    redis.call('ZADD', p .. 'watching', 'GT', seen, sid)
    redis.call('ZADD', per_title, 'GT', seen, sid)
  end
  redis.call('EXPIRE', skey, session_ttl)
  if redis.call('SET', p .. 'seen:' .. eid, '1', 'NX', 'EX', dedupe_ttl) then
    counted = counted + 1
    redis.call('INCRBY', p .. 'count:' .. kind, 1)
    if kind == 'session.started' then
      redis.call('ZINCRBY', p .. 'lb:watched', 1, movie)
    elseif kind == 'session.ended' then
      redis.call('INCRBY', p .. 'watched_seconds', extra)
    end
  end
end
return counted
"""

# Count events once each: ARGV = prefix, dedupe ttl, and a JSON array of
# [event id, type] pairs.
_COUNT = """
local p, dedupe_ttl = ARGV[1], ARGV[2]
local counted = 0
for _, e in ipairs(cjson.decode(ARGV[3])) do
  if redis.call('SET', p .. 'seen:' .. e[1], '1', 'NX', 'EX', dedupe_ttl) then
    counted = counted + 1
    redis.call('INCRBY', p .. 'count:' .. e[2], 1)
  end
end
return counted
"""


def window_key(window: str, start: float) -> str:
    return f"{P}lb:rated:{window}:{int(start)}"


def genre_key(genre: str) -> str:
    return f"{P}lb:genre:{genre.lower()}"


def count_key(event_type: str) -> str:
    return f"{P}count:{event_type}"


class RedisStore:
    name = "redis"

    def __init__(self, url: str, *, session_ttl_s: int, dedupe_ttl_s: int,
                 cache_ttl_s: int) -> None:
        self._url = url
        self._client: Optional[aioredis.Redis] = None
        self.session_ttl_s = session_ttl_s
        self.dedupe_ttl_s = dedupe_ttl_s
        self.cache_ttl_s = cache_ttl_s

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self._url, socket_timeout=5, socket_connect_timeout=3,
                health_check_interval=10)
            self._sessions = self._client.register_script(_SESSIONS)
            self._count = self._client.register_script(_COUNT)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def write_sessions(self, events: Sequence[Event]) -> int:
        """Apply viewing-session events: one script call for the batch."""
        rows: List[tuple] = []
        for e in events:
            if e.TYPE == "session.started":
                extra = e.device
            elif e.TYPE == "session.ended":
                extra = e.watched_s
            else:
                extra = e.position_s
            rows.append((e.TYPE, e.event_id, e.session_id, e.movie_id, e.user_id,
                         e.occurred_at.isoformat(), e.occurred_at.timestamp(), extra))
        if rows:
            await self._script("_sessions")(
                keys=[], args=[P, self.session_ttl_s, self.dedupe_ttl_s, orjson.dumps(rows)])
        return len(rows)

    async def count_events(self, events: Sequence[Event]) -> int:
        """Count events once each (for streams whose data lives elsewhere)."""
        if not events:
            return 0
        pairs = orjson.dumps([(e.event_id, e.TYPE) for e in events])
        return int(await self._script("_count")(keys=[], args=[P, self.dedupe_ttl_s, pairs]))

    def _script(self, name: str):
        self.client  # registers the scripts with the client
        return getattr(self, name)

    async def forget_titles(self, movie_ids: Iterable[str]) -> None:
        """Invalidate cached catalog entries after a catalog write."""
        keys = [f"{P}catalog:{m}" for m in set(movie_ids)]
        if keys:
            await self.client.delete(*keys)

    async def now_watching(self, movie_id: Optional[str] = None) -> int:
        """Sessions seen within the session TTL (ended ones are removed)."""
        key = f"{P}watching:{movie_id}" if movie_id else WATCHING
        return await self.client.zcount(key, time.time() - self.session_ttl_s, "+inf")

    async def prune_watching(self) -> None:
        """Drop sessions that went silent (no heartbeat within the TTL)."""
        await self.client.zremrangebyscore(WATCHING, "-inf", time.time() - self.session_ttl_s)

    async def mirror(self, scores: Dict[str, Dict[str, float]], expire_s: Dict[str, int],
                     remove: Optional[Dict[str, List[str]]] = None,
                     unions: Optional[Dict[str, List[str]]] = None) -> None:
        """Set leaderboard scores to absolute values (idempotent), one pipeline;
        ``remove`` takes members off boards they no longer belong on, and each
        board in ``unions`` is rebuilt as the sum of its source boards."""
        async with self.client.pipeline(transaction=False) as pipe:
            for key, members in (remove or {}).items():
                pipe.zrem(key, *members)
            for key, members in scores.items():
                if members:
                    pipe.zadd(key, members)
                    if key in expire_s:
                        pipe.expire(key, expire_s[key])
            for key, sources in (unions or {}).items():
                pipe.zunionstore(key, sources)
                if key in expire_s:
                    pipe.expire(key, expire_s[key])
            await pipe.execute()

    async def top(self, key: str, n: int = 10) -> List[Tuple[str, float]]:
        rows = await self.client.zrevrange(key, 0, n - 1, withscores=True)
        return [(m.decode(), s) for m, s in rows]

    async def rank(self, key: str, member: str) -> Optional[int]:
        """1-based rank of ``member`` on a leaderboard, None if absent."""
        r = await self.client.zrevrank(key, member)
        return None if r is None else r + 1

    async def cached_title(self, movie_id: str,
                           load: Callable[[str], Awaitable[Optional[dict]]]) -> Optional[dict]:
        """Read-through cache: Redis first, else ``load`` and remember it."""
        key = f"{P}catalog:{movie_id}"
        cached = await self.client.get(key)
        if cached is not None:
            return orjson.loads(cached)
        doc = await load(movie_id)
        if doc is not None:
            await self.client.set(key, orjson.dumps(doc, default=str), ex=self.cache_ttl_s)
        return doc
