"""Title write costs of a MongoDB server: the numbers that pick the local
stand-in (bench/README.md, "MongoDB stand-in").

For each catalog size (``--titles``, default 500 and 50,000) it empties the
database ``streamapp_candidates`` on the server at ``--url`` and runs
streamapp's own write path (``MongoStore``) the way the catalog agent does:

1. ``load``: every title once, as ``title.upserted`` events in batches of
   ``--batch`` (new titles: one insert command per batch);
2. ``edits``: ``--edits`` edits of titles drawn at random, in the same
   batches (existing titles: a refused insert, then one conditional
   ``$set`` per part of each title), for at most ``--budget`` seconds;
3. ``aggregates``: a rating aggregate for ``--edits`` titles, then a new
   value for each (``write_rating_totals``: inserts, then small ``$set``s);
4. single operations, ``--ops`` times each on random titles, one at a time:
   a ``$set`` of one field of a catalog document, and a ``find_one`` by
   ``_id``.

Titles come from the simulator's catalog generator (same seed, same
documents: about 1.5 KB of BSON each).  Rates are titles per second of
wall time; single operations are round trips in milliseconds.  The JSON
printed at the end (and written to ``--out``, if given) holds everything.

    python -m tests.system.mongo_candidates --url mongodb://127.0.0.1:27017/ [--titles 500,50000]
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List, Optional

from streamapp import records as r
from streamapp.simulator.catalog import Catalog
from streamapp.stores.mongo import MongoStore

DATABASE = "streamapp_candidates"
SEED = 11


def with_database(url: str, database: str) -> str:
    """``url`` with its path (the database) replaced, options kept."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


class Clock:
    """Event times that only move forward, so every edit outranks the last."""

    def __init__(self) -> None:
        self.now = datetime(2024, 1, 1, tzinfo=timezone.utc)

    def base(self) -> dict:
        self.now += timedelta(milliseconds=1)
        return {"event_id": str(uuid.uuid4()), "occurred_at": self.now}


#: Distinct generated titles; larger catalogs repeat them under new ids
#: (Faker takes about 4 ms a title).
DISTINCT = 1000


def make_catalog(count: int) -> Catalog:
    catalog = Catalog(seed=SEED, start_year=2024)
    ids = [f"m{i:06d}" for i in range(count)]
    for i, movie_id in enumerate(ids[:DISTINCT]):
        catalog.create(movie_id, None, ids[max(0, i - 20):i])  # "similar" from recent titles
    for i, movie_id in enumerate(ids[DISTINCT:]):
        model = catalog.titles[ids[i % DISTINCT]]
        catalog.titles[movie_id] = dataclasses.replace(
            model, movie_id=movie_id, genres=list(model.genres), cast=list(model.cast),
            synopsis=list(model.synopsis), similar=list(model.similar))
        catalog.order.append(movie_id)
    return catalog


async def timed_batches(store: MongoStore, events: List[r.Event], batch: int,
                        budget: float) -> Dict[str, float]:
    """Events through ``write_catalog`` a batch at a time; ``titles`` counts
    each batch's distinct titles (a batch folds edits of one title)."""
    started = time.perf_counter()
    sent = titles = 0
    for i in range(0, len(events), batch):
        chunk = events[i:i + batch]
        titles += await store.write_catalog(chunk)
        sent += len(chunk)
        if time.perf_counter() - started > budget:
            break
    seconds = time.perf_counter() - started
    return {"events": sent, "titles": titles, "seconds": round(seconds, 3),
            "events_per_s": round(sent / seconds, 1), "titles_per_s": round(titles / seconds, 1)}


def latency(samples: List[float]) -> Dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 3),
            "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3)}


async def measure(url: str, count: int, batch: int = 100, edits: int = 2000,
                  budget: float = 60.0, ops: int = 200, database: str = DATABASE) -> dict:
    """The four steps on a catalog of ``count`` titles in ``database`` (emptied first, dropped after)."""
    rng = random.Random(SEED)
    clock = Clock()
    made = time.perf_counter()
    catalog = make_catalog(count)
    ids = list(catalog.order)
    generated_s = time.perf_counter() - made

    store = MongoStore(with_database(url, database))
    client = store.new_client()
    await client.drop_database(database)
    try:
        await store.connect()
        result: dict = {"titles": count, "generated_s": round(generated_s, 1)}
        load = [catalog.titles[m].event(clock.base()) for m in ids]
        result["load"] = await timed_batches(store, load, batch, float("inf"))

        edited = [catalog.edit(rng.choice(ids), rng).event(clock.base()) for _ in range(edits)]
        result["edits"] = await timed_batches(store, edited, batch, budget)

        rated = rng.sample(ids, min(edits, count))
        started = time.perf_counter()
        await store.write_rating_totals({m: (1, 7) for m in rated})
        first = time.perf_counter() - started
        started = time.perf_counter()
        await store.write_rating_totals({m: (2, 15) for m in rated})
        again = time.perf_counter() - started
        result["aggregates"] = {"titles": len(rated),
                                "new_per_s": round(len(rated) / first, 1),
                                "update_per_s": round(len(rated) / again, 1)}

        movies = client[database]["movies"]
        sets, finds = [], []
        for i in range(ops):
            movie_id = rng.choice(ids)
            started = time.perf_counter()
            await movies.update_one({"_id": movie_id}, {"$set": {"runtime_min": 90 + i % 60}})
            sets.append(time.perf_counter() - started)
            started = time.perf_counter()
            await movies.find_one({"_id": movie_id}, {"genres": 1})
            finds.append(time.perf_counter() - started)
        result["single_set"] = latency(sets)
        result["find_by_id"] = latency(finds)
        stats = await client[database].command("collStats", "movies")
        result["stored_documents"] = stats.get("count")
        return result
    finally:
        await store.close()
        await client.drop_database(database)
        await client.close()


async def server_info(url: str) -> dict:
    client = MongoStore(url).new_client()
    try:
        info = await client.admin.command("buildInfo")
        hello = await client.admin.command("hello")
    finally:
        await client.close()
    flavour = {k: info[k] for k in ("version", "ferretdbVersion", "secantusVersion") if k in info}
    return {**flavour, "maxWireVersion": hello.get("maxWireVersion")}


async def run(args: argparse.Namespace) -> dict:
    report: dict = {"url": args.url, "server": await server_info(args.url),
                    "batch": args.batch, "sizes": []}
    for count in args.titles:
        result = await measure(args.url, count, args.batch, args.edits, args.budget, args.ops)
        print(json.dumps(result), file=sys.stderr, flush=True)
        report["sizes"].append(result)
    return report


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.system.mongo_candidates",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the server (its database part is ignored)")
    p.add_argument("--titles", type=lambda s: [int(n) for n in s.split(",")], default=[500, 50_000],
                   help="catalog sizes, comma-separated (default 500,50000)")
    p.add_argument("--batch", type=int, default=100, help="events per write_catalog call (default 100)")
    p.add_argument("--edits", type=int, default=2000, help="edits and aggregates per size")
    p.add_argument("--budget", type=float, default=60.0, help="seconds at most for the edits")
    p.add_argument("--ops", type=int, default=200, help="single $set and find_one samples")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
