"""``/api/titles/{movie_id}/``: one title, answered by the worker that owns
its partition; and the title helpers the other views share."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import aiohttp
import orjson
from faust.web import Request, Response
from faust.web.exceptions import ServiceUnavailable
from yarl import URL

from tables.ratings import HOPPING, TUMBLING, hopping_count, tumbling_count, window_start

from ..app import app, know_partitions
from ..config import settings
from ..stores import stores
from ..topics import ratings_topic
from .api import STORE_TIMEOUT_S, ApiView, NotFound, StoreUnavailable, from_store, utc
from .params import valid_id

#: Marks a title request one worker forwarded to another (never forwarded twice).
FORWARDED_HEADER = "X-Streamapp-Forwarded-By"


def _same_worker(a: URL, b: URL) -> bool:
    return (a.host, a.port) == (b.host, b.port)


#: Window label -> (size, step) in seconds, as ``tables.ratings`` counts them.
WINDOWS: Dict[str, Tuple[int, int]] = {
    TUMBLING: (settings.tumbling_window_s, settings.tumbling_window_s),
    HOPPING: (settings.hopping_window_s, settings.hopping_step_s),
}


def title_doc(doc: Mapping[str, Any]) -> Dict[str, Any]:
    """A MongoDB title as JSON: ``_id`` as ``movie_id``, datetimes as ISO."""
    out = dict(doc)
    out["movie_id"] = out.pop("_id")
    json_doc: Dict[str, Any] = orjson.loads(orjson.dumps(out, default=str))
    return json_doc


async def load_title(movie_id: str) -> Optional[Dict[str, Any]]:
    """Loader for the read-through cache: one title from MongoDB, as JSON."""
    docs = await stores.mongo.titles([movie_id])
    doc = docs.get(movie_id)
    return None if doc is None else title_doc(doc)


async def title_names(movie_ids: List[str]) -> Dict[str, Optional[str]]:
    """Names of many titles: one MGET on the cache, one MongoDB query for the rest.

    Titles loaded from MongoDB are put in the cache as ``cached_title`` does.
    """
    if not movie_ids:
        return {}
    cached = await from_store("redis", stores.redis.cached_titles(movie_ids))
    names: Dict[str, Optional[str]] = {}
    missing = []
    for movie_id, doc in cached.items():
        if doc is None:
            missing.append(movie_id)
        else:
            names[movie_id] = doc.get("title")
    if missing:
        docs = await from_store("mongodb", stores.mongo.titles(missing))
        if docs:
            await from_store("redis", stores.redis.cache_titles(
                {movie_id: title_doc(doc) for movie_id, doc in docs.items()}))
        for movie_id in missing:
            names[movie_id] = docs.get(movie_id, {}).get("title")
    return names


def window_board_key(label: str, now: float) -> Tuple[str, float]:
    """Redis key of the current window's board, as ``tables.ratings`` writes it."""
    size, step = WINDOWS[label]
    start = window_start(now, size, step)
    return stores.redis.keys.window(label, start), start


async def ensure_route_metadata(topic: str) -> None:
    """Make sure Faust's router can hash keys of ``topic`` (``know_partitions``)."""
    try:
        await know_partitions(app, topic, STORE_TIMEOUT_S)
    except Exception as exc:  # producer not started yet, broker unreachable ...
        raise StoreUnavailable("kafka", exc) from exc


class TitleView(ApiView):
    """One title: catalog document, all-time totals, window counts, ranks.

    The window counts live in tables partitioned like the ratings topic, and a
    worker holds only the partitions it was assigned.  ``handle`` validates
    the id, asks Faust's router which worker the partition assignor gave the
    title's partition, and either answers here (same worker) or forwards the
    request to that worker's web server once and relays its answer.  A
    forwarded request carries ``FORWARDED_HEADER``; a worker that receives
    one but does not own the title either (the two disagree while partitions
    move) answers 503 instead of forwarding again, so a request never loops.
    While partitions are being reassigned the assignor may not know the
    owner: that is a 503 too.

    Why the ratings topic rather than the table's changelog key: a table
    update goes to the changelog partition of the event being processed,
    i.e. the ratings topic's partition of the title, which Kafka picks by
    hashing the raw key bytes (``m00000``).  Faust's ``table_route`` instead
    hashes the key as the table's changelog serializes it, JSON by default
    (``"m00000"``, quotes included), which names a different partition, and
    so often a different worker.  The assignor gives the same worker
    partition N of the ratings topic and of each table's changelog (they are
    co-partitioned), so the owner of the ratings partition is the owner of
    the counts.
    """

    params = frozenset()

    async def handle(self, request: Request, movie_id: str) -> Response:
        valid_id(movie_id, "movie_id")
        await ensure_route_metadata(ratings_topic.get_topic_name())
        try:
            owner = app.router.external_topic_key_store(ratings_topic, movie_id)
        except KeyError:
            raise ServiceUnavailable() from None  # the assignor knows no owner yet
        if _same_worker(owner, app.conf.canonical_url):
            return await self.title(movie_id)
        if request.headers.get(FORWARDED_HEADER):
            raise StoreUnavailable("worker", RuntimeError(
                "partition moving: the worker this came from and this one both see another owner"))
        try:
            return await self.forward(request, owner)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise StoreUnavailable("worker", exc) from exc

    async def forward(self, request: Request, owner: URL) -> Response:
        """Relay the request to the owning worker, marked as forwarded."""
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        headers[FORWARDED_HEADER] = str(app.conf.canonical_url)
        # A worker's canonical URL always has a host.
        url = request.url.with_host(owner.host).with_port(owner.port)  # type: ignore[arg-type]
        async with app.http_client.get(url, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=STORE_TIMEOUT_S)) as reply:
            return self.text(await reply.text(), content_type=reply.content_type,
                             status=reply.status)

    async def title(self, movie_id: str) -> Response:
        now = time.time()
        doc = await from_store("redis", stores.redis.cached_title(movie_id, load_title))
        totals = await from_store("postgres", stores.postgres.title_totals([movie_id]))
        votes, score_sum = totals[movie_id]
        if doc is None and not votes:
            raise NotFound(f"no title {movie_id}")
        t_key, t_start = window_board_key(TUMBLING, now)
        h_key, h_start = window_board_key(HOPPING, now)
        ranks = await asyncio.gather(*(
            from_store("redis", stores.redis.rank(key, movie_id))
            for key in (stores.redis.keys.rated_all, stores.redis.keys.best_rated,
                        stores.redis.keys.most_watched, t_key)))
        watching = await from_store("redis", stores.redis.now_watching(movie_id))
        body = dict(doc or {"movie_id": movie_id})
        body["counts"] = {
            "votes": votes,
            "score_sum": score_sum,
            "average": round(score_sum / votes, 4) if votes else None,
            TUMBLING: {"window_start": utc(t_start),
                       "ratings": tumbling_count(movie_id)},
            HOPPING: {"window_start": utc(h_start),
                      "ratings": hopping_count(movie_id, now)},
        }
        body["ranks"] = dict(zip(("most_rated", "best_rated", "most_watched",
                                  f"most_rated_{TUMBLING}"), ranks))
        body["now_watching"] = watching
        body["served_by"] = str(app.conf.canonical_url)
        return self.json(body)
