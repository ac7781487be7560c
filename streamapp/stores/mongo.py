"""MongoDB: the movie catalog, its relationships and display blobs.

One document per title in ``movies``, ``_id`` = ``movie_id``.  Every write
is a ``$set`` of absolute values (never ``$inc``), so replaying a batch
converges to the same document.  Rating aggregates live next to it in
``title_ratings`` (small documents, same ``_id``), copied from PostgreSQL's
exact totals, and ``titles()`` joins them back in as each title's
``ratings``: on FerretDB a small ``$set`` on a catalog document rewrites the
whole document and its indexes, several times the cost of the small
document's.

New titles are inserted (one command per batch: on FerretDB far cheaper than
an upsert); titles that exist are updated.  Lookups by a few ids go one id
at a time: FerretDB v1 answers ``_id`` equality from its primary key but
scans the collection for ``_id: {$in: [...]}``.  The figures: bench/README.md,
"FerretDB write and lookup costs".

The code sticks to standard MongoDB, and within it to what FerretDB (one of
the local stack's wire-compatible stand-ins) supports too: no transactions,
no change streams, and only ``$sum``/``$count`` in ``$group``.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple
from urllib.parse import urlparse

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from ..codec import version
from ..records import Event
from .base import StoreBase

#: Update statements per command; see ``_update_many``.
UPDATE_CHUNK = 4

#: Fields of a title that a catalog event sets (everything but aggregates).
_TITLE_FIELDS = ("title", "year", "genres", "directors", "similar", "synopsis", "runtime_min")


class MongoStore(StoreBase):
    name = "mongodb"

    def __init__(self, url: str, tls_ca_file: str = "") -> None:
        # Credentials stay in the URL (``mongodb://user:password@host/db?authSource=admin``),
        # where PyMongo reads them; ``tls_ca_file`` verifies a TLS server's certificate.
        self._url = url
        self._tls: Dict[str, Any] = {"tlsCAFile": tls_ca_file} if tls_ca_file else {}
        self._db_name = urlparse(url).path.lstrip("/") or "streamapp"
        self._client: Optional[AsyncMongoClient] = None
        self._indexed = False
        # One write at a time per worker.  The catalog and ratings agents both
        # upsert title documents; concurrent upserts of one new _id race
        # (E11000), and FerretDB leaks a backend connection on that path until
        # it stops answering.  Titles are co-partitioned across topics, so no
        # other worker writes the same documents.
        self._writing = asyncio.Lock()
        #: Titles whose rating aggregate this store has written (inserted or
        #: updated): their next write is an update, the others try an insert.
        self._aggregated: Set[str] = set()

    async def movies(self) -> AsyncCollection:
        if self._client is None:
            self._client = self.new_client()
        database = self._client[self._db_name]
        collection = database["movies"]
        if not self._indexed:
            await collection.create_index([("genres", ASCENDING)])
            await collection.create_index([("year", DESCENDING)])
            await collection.create_index([("cast.name", ASCENDING)])
            await database["title_ratings"].create_index([("avg", DESCENDING)])
            self._indexed = True
        return collection

    def new_client(self) -> AsyncMongoClient:
        """A client for our URL (it connects on first use)."""
        return AsyncMongoClient(self._url, serverSelectionTimeoutMS=3000, socketTimeoutMS=15000,
                                connectTimeoutMS=3000, tz_aware=True, **self._tls)

    async def title_ratings(self) -> AsyncCollection:
        return (await self.movies()).database["title_ratings"]

    async def connect(self) -> None:
        await self.movies()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def ping(self) -> bool:
        client = (await self.movies()).database.client
        reply = await client.admin.command("ping")
        return reply.get("ok") == 1

    async def _update_many(self, updates: List[dict], ordered: bool,
                           collection: str = "movies") -> None:
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
        target = (await self.movies()).database[collection]
        for i in range(0, len(updates), UPDATE_CHUNK):
            # The lock is held per command, not per call, so a catalog batch
            # is not stuck behind a whole flush of rating aggregates.
            async with self._writing:
                await self._send_updates(target, updates[i:i + UPDATE_CHUNK], ordered)

    async def _insert_new(self, updates: List[dict], collection: str = "movies") -> List[dict]:
        """Insert the upserts as new documents, in one command.

        Returns the updates still to send: those whose document exists
        already (duplicate key).  Trying the insert first is cheaper on
        FerretDB than asking which exist: ``_id: {$in: [...]}`` scans the
        whole collection there, and a refused insert costs less than an
        upsert that inserts (bench/README.md, "FerretDB write and lookup costs").
        """
        target = (await self.movies()).database[collection]
        documents = [{"_id": u["q"]["_id"], **u["u"].get("$setOnInsert", {}), **u["u"]["$set"]}
                     for u in updates]
        async with self._writing:
            reply = await target.database.command(
                {"insert": target.name, "documents": documents, "ordered": False})
        errors = reply.get("writeErrors") or []
        if any(e.get("code") != 11000 for e in errors):
            raise _bulk_error(errors)
        return [updates[e["index"]] for e in sorted(errors, key=lambda e: e["index"])]

    async def _send_updates(self, target: AsyncCollection, todo: List[dict], ordered: bool) -> None:
        for _ in range(5):
            reply = await target.database.command(
                {"update": target.name, "updates": todo, "ordered": ordered})
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
        """Upsert titles and mark removals, "newest wins" (``codec.version``).

        A title has two parts that later events replace: its content (set by
        the newest ``title.upserted``, ranked by ``content_v``) and its status
        (removed or not, set by the newest event of either kind, ranked by
        ``status_v``).  A batch is folded to the newest of each per title; a
        new title is inserted whole, and an existing one gets one update per
        part, each applied only if it outranks the stored one.  So two edits
        give the same document in one batch or two, in either order.
        """
        folded: Dict[str, dict] = {}
        for event in events:
            v = version(event)
            title = folded.setdefault(event.movie_id, {"content": None, "status": None})
            if event.TYPE == "title.upserted" and (
                    title["content"] is None or v > title["content"][0]):
                title["content"] = (v, event)
            if title["status"] is None or v > title["status"][0]:
                title["status"] = (v, event)
        if not folded:
            return 0
        now = datetime.now(timezone.utc)
        inserts = []
        for movie_id, title in folded.items():
            doc: dict = {}
            if title["content"] is not None:
                doc.update(_content(*title["content"]))
            doc.update(_status(*title["status"]))
            inserts.append({"q": {"_id": movie_id},
                            "u": {"$set": doc, "$setOnInsert": {"created_at": now}}})
        existing = {u["q"]["_id"] for u in await self._insert_new(inserts)}
        updates = []
        for movie_id in sorted(existing):
            title = folded[movie_id]
            for part, fields in (("content_v", title["content"] and _content(*title["content"])),
                                 ("status_v", _status(*title["status"]))):
                if fields:
                    # Older or missing: one range condition next to ``_id``,
                    # not an ``$or``, under which some servers' planners
                    # leave the ``_id`` index and scan the collection.
                    updates.append({"q": {"_id": movie_id, part: {"$not": {"$gte": fields[part]}}},
                                    "u": {"$set": fields}})
        if updates:
            await self._update_many(updates, ordered=True)
        return len(folded)

    async def write_rating_totals(self, totals: Dict[str, Tuple[int, int]]) -> int:
        """Set each title's rating aggregate to the exact totals given."""
        updates: List[Dict[str, Any]] = [
            {"q": {"_id": movie_id},
             "u": {"$set": {"count": votes, "sum": score_sum,
                            "avg": round(score_sum / votes, 4)}},
             "upsert": True}
            for movie_id, (votes, score_sum) in sorted(totals.items()) if votes
        ]
        # A title this store has not written yet is most likely new: insert it.
        unseen = [u for u in updates if u["q"]["_id"] not in self._aggregated]
        seen = [u for u in updates if u["q"]["_id"] in self._aggregated]
        if unseen:
            seen += await self._insert_new(unseen, collection="title_ratings")
        if seen:
            await self._update_many(seen, ordered=False, collection="title_ratings")
        self._aggregated.update(u["q"]["_id"] for u in unseen)
        return len(updates)

    async def titles(self, movie_ids: List[str]) -> Dict[str, dict]:
        """Title documents with their rating aggregate as ``ratings`` (a title
        rated before its catalog entry arrived is just ``_id`` and ``ratings``)."""
        ids = list(movie_ids)
        docs = await _by_ids(await self.movies(), ids)
        for doc in docs.values():
            for name in VERSION_FIELDS:
                doc.pop(name, None)
        for agg in (await _by_ids(await self.title_ratings(), ids)).values():
            docs.setdefault(agg["_id"], {"_id": agg["_id"]})["ratings"] = {
                "count": agg["count"], "sum": agg["sum"], "avg": agg["avg"]}
        return docs

    async def genres_of(self, movie_ids: List[str]) -> Dict[str, List[str]]:
        docs = await _by_ids(await self.movies(), list(movie_ids), {"genres": 1})
        return {movie_id: doc.get("genres", []) for movie_id, doc in docs.items()}


#: Up to this many ids, documents are fetched by ``_id`` one at a time (a few
#: at once); more, and one ``$in`` scan is cheaper.
BY_ID_LIMIT = 40


async def _by_ids(collection: AsyncCollection, ids: List[str], projection: Optional[dict] = None) -> Dict[str, dict]:
    if len(ids) > BY_ID_LIMIT:
        return {d["_id"]: d async for d in collection.find({"_id": {"$in": ids}}, projection)}
    found: Dict[str, dict] = {}
    for i in range(0, len(ids), 8):
        docs = await asyncio.gather(*(collection.find_one({"_id": movie_id}, projection)
                                      for movie_id in ids[i:i + 8]))
        found.update((d["_id"], d) for d in docs if d is not None)
    return found


def _bulk_error(errors: List[dict]) -> BulkWriteError:
    return BulkWriteError({"writeErrors": errors, "nInserted": 0, "nUpserted": 0,
                           "nMatched": 0, "nModified": 0, "nRemoved": 0, "upserted": [],
                           "writeConcernErrors": []})


#: Fields that rank a title's parts; internal, not shown by ``titles()``.
VERSION_FIELDS = ("content_v", "status_v")


def _content(v: str, event: Event) -> dict:
    """What a ``title.upserted`` sets: the title's whole content."""
    doc = {name: getattr(event, name) for name in _TITLE_FIELDS}
    doc["cast"] = [{"name": c.name, "role": c.role} for c in event.cast]
    doc["artwork"] = [
        {"kind": a.kind, "url": a.url, "width": a.width, "height": a.height,
         "dominant_color": a.dominant_color}
        for a in event.artwork
    ]
    doc.update(updated_at=event.occurred_at, content_v=v)
    return doc


def _status(v: str, event: Event) -> dict:
    """What the newest event of a title says about its status."""
    if event.TYPE == "title.removed":
        return {"removed": True, "removed_at": event.occurred_at,
                "removed_reason": event.reason, "last_event_id": event.event_id,
                "status_v": v}
    return {"removed": False, "last_event_id": event.event_id, "status_v": v}
