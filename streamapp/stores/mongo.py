"""MongoDB: the movie catalog, its relationships and display blobs.

One document per title, ``_id`` = ``movie_id``, written with one
``bulk_write`` per batch of upserts.  Every update is a ``$set`` of absolute
values (never ``$inc``), so replaying a batch converges to the same document.
Rating aggregates are copied from PostgreSQL's exact totals for the same
reason.

The code sticks to what both MongoDB and FerretDB (the local stack's
wire-compatible server) support: no transactions, no change streams, and
only ``$sum``/``$count`` in ``$group``.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, UpdateOne

from ..records import Event

#: Fields of a title that a catalog event sets (everything but aggregates).
_TITLE_FIELDS = ("title", "year", "genres", "directors", "similar", "synopsis", "runtime_min")


class MongoStore:
    name = "mongodb"

    def __init__(self, url: str) -> None:
        self._url = url
        self._db_name = urlparse(url).path.lstrip("/") or "streamapp"
        self._client: Optional[AsyncMongoClient] = None
        self._indexed = False

    async def movies(self):
        if self._client is None:
            self._client = AsyncMongoClient(self._url, serverSelectionTimeoutMS=3000,
                                            connectTimeoutMS=3000, tz_aware=True)
        collection = self._client[self._db_name]["movies"]
        if not self._indexed:
            await collection.create_index([("genres", ASCENDING)])
            await collection.create_index([("year", DESCENDING)])
            await collection.create_index([("cast.name", ASCENDING)])
            await collection.create_index([("ratings.avg", DESCENDING)])
            self._indexed = True
        return collection

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def ping(self) -> bool:
        await self.movies()
        reply = await self._client.admin.command("ping")
        return reply.get("ok") == 1

    async def write_catalog(self, events: Sequence[Event]) -> int:
        """Upsert titles and mark removals, one round trip."""
        ops = [_catalog_op(e) for e in events]
        if ops:
            await (await self.movies()).bulk_write(ops, ordered=True)
        return len(ops)

    async def write_rating_totals(self, totals: Dict[str, Tuple[int, int]]) -> int:
        """Set each title's rating aggregate to the exact totals given."""
        ops = [
            UpdateOne({"_id": movie_id},
                      {"$set": {"ratings": {"count": votes, "sum": score_sum,
                                            "avg": round(score_sum / votes, 4)}}},
                      upsert=True)
            for movie_id, (votes, score_sum) in sorted(totals.items()) if votes
        ]
        if ops:
            await (await self.movies()).bulk_write(ops, ordered=False)
        return len(ops)

    async def titles(self, movie_ids: List[str]) -> Dict[str, dict]:
        cursor = (await self.movies()).find({"_id": {"$in": list(movie_ids)}})
        return {doc["_id"]: doc async for doc in cursor}

    async def genres_of(self, movie_ids: List[str]) -> Dict[str, List[str]]:
        cursor = (await self.movies()).find({"_id": {"$in": list(movie_ids)}}, {"genres": 1})
        return {doc["_id"]: doc.get("genres", []) async for doc in cursor}


def _catalog_op(event: Event) -> UpdateOne:
    now = datetime.now(timezone.utc)
    if event.TYPE == "title.removed":
        return UpdateOne({"_id": event.movie_id},
                         {"$set": {"removed": True, "removed_at": event.occurred_at,
                                   "removed_reason": event.reason,
                                   "last_event_id": event.event_id}},
                         upsert=True)
    doc = {name: getattr(event, name) for name in _TITLE_FIELDS}
    doc["cast"] = [{"name": c.name, "role": c.role} for c in event.cast]
    doc["artwork"] = [
        {"kind": a.kind, "url": a.url, "width": a.width, "height": a.height,
         "dominant_color": a.dominant_color}
        for a in event.artwork
    ]
    doc.update(removed=False, updated_at=event.occurred_at, last_event_id=event.event_id)
    return UpdateOne({"_id": event.movie_id},
                     {"$set": doc, "$setOnInsert": {"created_at": now}},
                     upsert=True)
