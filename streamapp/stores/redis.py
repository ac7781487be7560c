"""Redis: viewing sessions, live counters, leaderboards, rankings, cache.

Everything for one batch goes in one pipeline (one round trip).  Updates are
idempotent by construction where they can be (``HSET``, ``ZADD GT``,
``ZREM``, absolute ``ZADD`` of leaderboard scores mirrored from the tables);
the few increments (events counted, "most watched") run in a Lua script that
first claims the event id with ``SET NX``, so a replayed event adds nothing.

Key layout (all under the ``sa:`` prefix):
    sa:session:<sid>             hash, expires SESSION_TTL_S after last event
    sa:watching                  zset sid -> last seen (epoch s): "now watching"
    sa:watching:<movie>          zset sid -> last seen, per title
    sa:lb:watched                zset movie -> sessions started
    sa:lb:rated:all              zset movie -> ratings (all time)
    sa:lb:rated:<window>:<start> zset movie -> ratings in that window
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

# KEYS[1] = the dedupe claim, KEYS[2..] = target keys; ARGV[1] = the claim's ttl,
# then one (op, amount, member) triple per target key.  The ops run only when
# the claim is new.
_GUARDED = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #ARGV, 3 do
  local op, amount, member = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = KEYS[(i + 1) / 3 + 1]
  if op == 'incrby' then redis.call('INCRBY', key, amount)
  elseif op == 'zincrby' then redis.call('ZINCRBY', key, amount, member) end
end
return 1
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
            self._guarded = self._client.register_script(_GUARDED)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def _guard(self, pipe, event: Event, *ops: Tuple[str, str, float, str]) -> None:
        """Queue (in ``pipe``) increments that must count ``event`` at most once."""
        keys = [f"{P}seen:{event.event_id}"] + [key for _, key, _, _ in ops]
        args: List = [self.dedupe_ttl_s]
        for op, _, amount, member in ops:
            args += [op, amount, member]
        await self._guarded(keys=keys, args=args, client=pipe)

    async def write_sessions(self, events: Sequence[Event]) -> int:
        """Apply viewing-session events in one pipeline."""
        client = self.client
        async with client.pipeline(transaction=False) as pipe:
            for e in events:
                sid_key = f"{P}session:{e.session_id}"
                seen = e.occurred_at.timestamp()
                per_title = f"{P}watching:{e.movie_id}"
                if e.TYPE == "session.ended":
                    pipe.hset(sid_key, mapping={"state": "ended", "watched_s": e.watched_s,
                                                "ended_at": e.occurred_at.isoformat()})
                    pipe.zrem(WATCHING, e.session_id)
                    pipe.zrem(per_title, e.session_id)
                    await self._guard(pipe, e, ("incrby", count_key(e.TYPE), 1, ""),
                                ("incrby", P + "watched_seconds", e.watched_s, ""))
                else:
                    fields = {"user_id": e.user_id, "movie_id": e.movie_id,
                              "last_seen": e.occurred_at.isoformat()}
                    ops = [("incrby", count_key(e.TYPE), 1, "")]
                    if e.TYPE == "session.started":
                        fields.update(state="playing", device=e.device,
                                      started_at=e.occurred_at.isoformat())
                        ops.append(("zincrby", MOST_WATCHED, 1, e.movie_id))
                    else:
                        fields["position_s"] = e.position_s
                    pipe.hset(sid_key, mapping=fields)
                    pipe.zadd(WATCHING, {e.session_id: seen}, gt=True)
                    pipe.zadd(per_title, {e.session_id: seen}, gt=True)
                    await self._guard(pipe, e, *ops)
                pipe.expire(sid_key, self.session_ttl_s)
            await pipe.execute()
        return len(events)

    async def count_events(self, events: Sequence[Event]) -> None:
        """Count events once each (used for streams whose data lives elsewhere)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for e in events:
                await self._guard(pipe, e, ("incrby", count_key(e.TYPE), 1, ""))
            await pipe.execute()

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
                     remove: Optional[Dict[str, List[str]]] = None) -> None:
        """Set leaderboard scores to absolute values (idempotent), one pipeline;
        ``remove`` takes members off boards they no longer belong on."""
        async with self.client.pipeline(transaction=False) as pipe:
            for key, members in (remove or {}).items():
                pipe.zrem(key, *members)
            for key, members in scores.items():
                if members:
                    pipe.zadd(key, members)
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
