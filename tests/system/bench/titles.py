"""The ``mongo_titles`` pass: title writes on the MongoDB server the run uses.

``tests/system/mongo_candidates.py`` on a catalog of 500 titles, in a
database of the benchmark's own, after the pipeline passes: so one run has
the pipeline's rates and the title write rates of the same server, for
comparing the local stand-ins (bench/README.md, "MongoDB stand-in").
"""
from __future__ import annotations

from typing import Dict

from tests.system.bench.common import BENCH_DATABASE
from tests.system.mongo_candidates import measure, server_info

TITLES = 500


async def pass_mongo_titles(base: Dict[str, str]) -> dict:
    url = base["MONGODB_URL"]
    result = await measure(url, TITLES, edits=1000, budget=30.0, ops=100,
                           database=f"{BENCH_DATABASE}_titles")
    return {"server": await server_info(url), **result,
            "events": result["edits"]["events"], "events_per_s": result["edits"]["events_per_s"],
            "seconds": result["edits"]["seconds"]}
