"""``GET /api/series/?minutes=15``: the time series behind the dashboard's charts.

Public, like ``/api/stats/`` and ``/api/health/`` (counters, lag, ping times:
nothing about a person).  One worker per slot samples the whole deployment
into Redis (``streamapp.series``), so every worker answers with the same
history.  Answer::

    {"interval_s": 5, "at": [epoch s, ...],
     "rates": {stream: [events/s or null, ...]},   # committed offsets, per second
     "lag": {stream: [n, ...]},                    # consumer group lag
     "latency_ms": {store: [ms or null, ...]},     # ping from the sampling worker
     "workers": [n, ...],
     "windows": {"size_s": 60,                     # ratings per tumbling window
                 "start": [epoch s, ...], "ratings": [n, ...]}}
"""
from __future__ import annotations

import time
from typing import Any, Dict, List

from faust.web import Request, Response

from ..app import app
from ..series import rates, series, windows
from ..topics import STREAMS
from .views import ApiView, from_store, int_in


@app.page("/api/series/", name="api-series")
class SeriesView(ApiView):
    params = frozenset({"minutes"})

    async def handle(self, request: Request) -> Response:
        minutes = int_in(request.query, "minutes", 1, 30, default=15)
        samples: List[Dict[str, Any]] = await from_store("redis", series.read(minutes * 60))
        stores = sorted({name for s in samples for name in s.get("latency_ms", {})})
        return self.json({
            "interval_s": series.every_s,
            "minutes": minutes,
            "at": [s["at"] for s in samples],
            "rates": rates(samples),
            "lag": {name: [s["lag"].get(name, 0) for s in samples] for name in STREAMS},
            "latency_ms": {name: [s["latency_ms"].get(name) for s in samples] for name in stores},
            "workers": [s.get("workers") for s in samples],
            "windows": {"size_s": series.window_s,
                        **windows(samples, time.time() - minutes * 60 - series.window_s)},
        })
