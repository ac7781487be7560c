"""Every Redis key streamapp writes.

Key layout (``P`` is ``REDIS_KEY_PREFIX``, ``sa:`` by default; ``{sK}`` is the
shard of the title, or of the event id for plain counts):
    P{sK}:session:<sid>          hash, expires SESSION_TTL_S after last event
    P{sK}:watching               zset sid -> last seen (epoch s)
    P{sK}:watching:<movie>       zset sid -> last seen, per title
    P{sK}:lb:watched             zset movie -> sessions started (the shard's titles)
    P{sK}:counts                 hash event type -> events counted once each,
                                 and watched_seconds
    P{sK}:seen:<event_id>        dedupe claims, expire after DEDUPE_TTL_S
    P lb:watched                 zset movie -> sessions started (all titles;
                                 ZADD GT of each shard's count)
    P lb:rated:all               zset movie -> ratings (all time)
    P lb:best                    zset movie -> average score (min votes)
    P lb:genre:<genre>           zset movie -> ratings (all time) in a genre
    P{win}:lb:rated:<window>:<start>  zset movie -> ratings in that window
    P catalog:<movie>            cached title JSON (read-through)
    P workers                    hash worker url -> its heartbeat (``streamapp.deployment``)
"""
from __future__ import annotations

import zlib
from typing import List, Optional

#: The prefix of every key (``REDIS_KEY_PREFIX``) unless a store is given another.
DEFAULT_PREFIX = "sa:"


class Keys:
    """Every key streamapp writes, under one prefix (see the module docstring)."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, shards: int = 16) -> None:
        if shards < 1 or shards > 100:
            raise ValueError("REDIS_SHARDS must be between 1 and 100")
        self.prefix = prefix
        self.shards = shards
        self.rated_all = f"{prefix}lb:rated:all"
        self.best_rated = f"{prefix}lb:best"
        self.most_watched = f"{prefix}lb:watched"
        self.workers = f"{prefix}workers"

    def genre(self, genre: str) -> str:
        return f"{self.prefix}lb:genre:{genre.lower()}"

    def window(self, window: str, start: float) -> str:
        return f"{self.prefix}{{win}}:lb:rated:{window}:{int(start)}"

    def catalog(self, movie_id: str) -> str:
        return f"{self.prefix}catalog:{movie_id}"

    def shard_of(self, value: str) -> int:
        """The counter shard of a title or event id (stable across processes)."""
        return zlib.crc32(value.encode()) % self.shards

    def shard(self, index: int) -> str:
        """The key prefix of one counter shard, hash tag included."""
        return f"{self.prefix}{{s{index:02d}}}:"

    def counts(self, index: int) -> str:
        return self.shard(index) + "counts"

    def session(self, session_id: str, movie_id: str) -> str:
        return self.shard(self.shard_of(movie_id)) + f"session:{session_id}"

    def watching(self, movie_id: Optional[str] = None) -> List[str]:
        """The "now watching" sets: of one title (one key), or of every shard."""
        if movie_id is not None:
            return [self.shard(self.shard_of(movie_id)) + f"watching:{movie_id}"]
        return [self.shard(i) + "watching" for i in range(self.shards)]
