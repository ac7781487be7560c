"""Numbers from samples: rates, ratios, percentiles, events per second."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from tests.system.bench.common import ACCOUNT_PREFIXES, Timeline
from tests.system.bench.measure import Sampler


def percentiles(values: Sequence[float]) -> Optional[dict]:
    import numpy as np

    if not len(values):
        return None
    a = np.asarray(values, dtype=float)
    def q(p: float) -> float:
        return round(float(np.percentile(a, p)), 4)

    return {"p50": q(50), "p95": q(95), "p99": q(99), "max": round(float(a.max()), 4),
            "samples": int(a.size)}


def per_second(timeline: Timeline, start: float) -> List[Tuple[float, float]]:
    """Events per 1 s bucket from cumulative samples (linear in between)."""
    import numpy as np

    if not timeline:
        return []
    t = np.array([p[0] for p in timeline]) - start
    c = np.array([p[1] for p in timeline], dtype=float)
    edges = np.arange(0.0, float(np.floor(t[-1])) + 2.0, 1.0)
    cum = np.interp(edges, t, c, left=0.0, right=float(c[-1]))
    return [(float(e), float(n)) for e, n in zip(edges[:-1], np.diff(cum))]


def rate(events: int, start: Optional[float], end: Optional[float]) -> Optional[float]:
    if not events or not start or not end or end <= start:
        return None
    return round(events / (end - start), 1)


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a and b else None


def account_events(summary: dict) -> int:
    return sum(n for t, n in summary["per_type"].items() if t.startswith(ACCOUNT_PREFIXES))


def cumulative(batches: Sequence[Sequence[float]]) -> Timeline:
    """Per-batch ``(time, events)`` → cumulative timeline."""
    timeline: Timeline = []
    total = 0
    for at, n in batches:
        total += int(n)
        timeline.append((float(at), total))
    return timeline


def summarise_progress(name: str, timeline: Timeline, total: int, started: float,
                       start: Optional[float], start_means: str, sampler: Sampler,
                       what: str) -> dict:
    if not timeline or timeline[-1][1] < total:
        raise RuntimeError(f"{name}: read {timeline[-1][1] if timeline else 0} of {total} events")
    start = start or timeline[0][0]
    end = next(t for t, n in timeline if n >= total)
    return {
        "what": what, "events": total,
        "events_per_s": rate(total, start, end),
        "seconds": round(end - start, 3),
        "seconds_including_startup": round(end - started, 2),
        "rate_measured": f"events / (time the last event was read - {start_means})",
        "latency_s": None,
        "latency_note": "no durable write in this pass",
        **sampler.report(start, end),
        "throughput_per_s": [[round(t, 1), round(n, 1)] for t, n in per_second(timeline, start)],
    }
