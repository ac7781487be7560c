"""MongoDB: the movie catalog, its relationships and display blobs.

One document per title, ``_id`` = ``movie_id``, written with one ``update``
command carrying the whole batch of upserts.  Every update is a ``$set`` of absolute
values (never ``$inc``), so replaying a batch converges to the same document.
Rating aggregates are copied from PostgreSQL's exact totals for the same
reason.

The code sticks to what both MongoDB and FerretDB (the local stack's
wire-compatible server) support: no transactions, no change streams, and
only ``$sum``/``$count`` in ``$group``.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.errors import BulkWriteError

from ..records import Event

#: Update statements per command; see ``_update_many``.
UPDATE_CHUNK = 4

#: Fields of a title that a catalog event sets (everything but aggregates).
_TITLE_FIELDS = ("title", "year", "genres", "directors", "similar", "synopsis", "runtime_min")


class MongoStore:
    name = "mongodb"

    def __init__(self, url: str) -> None:
        self._url = url
        self._db_name = urlparse(url).path.lstrip("/") or "streamapp"
        self._client: Optional[AsyncMongoClient] = None
        self._indexed = False
        # One write at a time per worker.  The catalog and ratings agents both
        # upsert title documents; concurrent upserts of one new _id race
        # (E11000), and FerretDB leaks a backend connection on that path until
        # it stops answering.  Titles are co-partitioned across topics, so no
        # other worker writes the same documents.
        self._writing = asyncio.Lock()

    async def movies(self):
        if self._client is None:
            self._client = AsyncMongoClient(self._url, serverSelectionTimeoutMS=3000, socketTimeoutMS=15000,
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

    async def _update_many(self, updates: List[dict], ordered: bool) -> None:
        """Send many update statements, ``UPDATE_CHUNK`` per ``update`` command.

        This is what ``bulk_write`` sends, issued directly because PyMongo's
        bulk result parsing expects reply fields (``nModified``) that
        FerretDB does not always return.  The chunk is small because FerretDB
        v1 keeps every statement's cursor (and a backend connection) open until
        the whole command ends: commands whose statements add up to more than
        its connection pool (50 by default), across all clients at once,
        deadlock the server.  Four statements per command keep a dozen
        concurrent writers safe and cost little: FerretDB's time goes into
        each statement, not the round trip.  Two concurrent upserts of the same
        new ``_id`` can make one fail with a duplicate key (E11000); the
        server's advice is to retry, which we do for those statements only.
        Other write errors are raised as ``BulkWriteError``.
        """
        movies = await self.movies()
        for i in range(0, len(updates), UPDATE_CHUNK):
            # The lock is held per command, not per call, so a catalog batch
            # is not stuck behind a whole flush of rating aggregates.
            async with self._writing:
                await self._send_updates(movies, updates[i:i + UPDATE_CHUNK], ordered)

    async def _send_updates(self, movies, todo: List[dict], ordered: bool) -> None:
        for _ in range(5):
            reply = await movies.database.command(
                {"update": movies.name, "updates": todo, "ordered": ordered})
            errors = reply.get("writeErrors") or []
            if not errors:
                break
            if any(e.get("code") != 11000 for e in errors):
                raise _bulk_error(errors)
            first = min(e["index"] for e in errors)
            todo = todo[first:] if ordered else [todo[e["index"]] for e in errors]
        else:
            raise _bulk_error(errors)

    async def write_catalog(self, events: Sequence[Event]) -> int:
        """Upsert titles and mark removals: one statement per title.

        A batch's edits of one title are folded into one ``$set``, later
        fields over earlier ones, which leaves the same document as applying
        them in order (every edit is a ``$set``), at the cost of one update.
        """
        folded: Dict[str, dict] = {}
        for event in events:
            update = _catalog_update(event)
            before = folded.get(event.movie_id)
            if before is None:
                folded[event.movie_id] = update
            else:
                before["u"]["$set"].update(update["u"]["$set"])
                if "$setOnInsert" in update["u"]:
                    before["u"].setdefault("$setOnInsert", update["u"]["$setOnInsert"])
        if folded:
            await self._update_many(list(folded.values()), ordered=True)
        return len(folded)

    async def write_rating_totals(self, totals: Dict[str, Tuple[int, int]]) -> int:
        """Set each title's rating aggregate to the exact totals given."""
        updates = [
            {"q": {"_id": movie_id},
             "u": {"$set": {"ratings": {"count": votes, "sum": score_sum,
                                        "avg": round(score_sum / votes, 4)}}},
             "upsert": True}
            for movie_id, (votes, score_sum) in sorted(totals.items()) if votes
        ]
        if updates:
            await self._update_many(updates, ordered=False)
        return len(updates)

    async def titles(self, movie_ids: List[str]) -> Dict[str, dict]:
        cursor = (await self.movies()).find({"_id": {"$in": list(movie_ids)}})
        return {doc["_id"]: doc async for doc in cursor}

    async def genres_of(self, movie_ids: List[str]) -> Dict[str, List[str]]:
        cursor = (await self.movies()).find({"_id": {"$in": list(movie_ids)}}, {"genres": 1})
        return {doc["_id"]: doc.get("genres", []) async for doc in cursor}


def _bulk_error(errors: List[dict]) -> BulkWriteError:
    return BulkWriteError({"writeErrors": errors, "nInserted": 0, "nUpserted": 0,
                           "nMatched": 0, "nModified": 0, "nRemoved": 0, "upserted": [],
                           "writeConcernErrors": []})


def _catalog_update(event: Event) -> dict:
    now = datetime.now(timezone.utc)
    if event.TYPE == "title.removed":
        return {"q": {"_id": event.movie_id},
                "u": {"$set": {"removed": True, "removed_at": event.occurred_at,
                               "removed_reason": event.reason,
                               "last_event_id": event.event_id}},
                "upsert": True}
    doc = {name: getattr(event, name) for name in _TITLE_FIELDS}
    doc["cast"] = [{"name": c.name, "role": c.role} for c in event.cast]
    doc["artwork"] = [
        {"kind": a.kind, "url": a.url, "width": a.width, "height": a.height,
         "dominant_color": a.dominant_color}
        for a in event.artwork
    ]
    doc.update(removed=False, updated_at=event.occurred_at, last_event_id=event.event_id)
    return {"q": {"_id": event.movie_id},
            "u": {"$set": doc, "$setOnInsert": {"created_at": now}},
            "upsert": True}
