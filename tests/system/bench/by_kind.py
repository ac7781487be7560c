"""Progress by kind of event (accounts, ratings, sessions, titles): which kind is slow.

Each kind ends in a different store, so a pass's kinds finish at different
times; pass 3 against pass 4 per kind shows where batching pays off.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from tests.system.bench.common import SESSION_TYPES
from tests.system.bench.numbers import account_events, rate, ratio

#: (unix time, the probe's counts) samples of one pass.
KindSamples = List[Tuple[float, Dict[str, int]]]


def wanted_by_kind(summary: dict) -> Dict[str, int]:
    """Events of each kind the simulator's summary says the stores will hold."""
    expect = summary["expect"]
    return {"accounts": account_events(summary),
            "ratings": expect["redis"]["rating.submitted"],
            "sessions": sum(expect["redis"][t] for t in SESSION_TYPES),
            "titles": expect["mongodb"]["movies"]}


def kind_progress(kinds: KindSamples, wanted: Dict[str, int], start: Optional[float],
                  end: Optional[float]) -> Tuple[dict, dict]:
    """Seconds after ``start`` at which each kind was all durable, and each kind's
    rate (for a kind that never finished: what was durable by ``end``)."""
    finished, kind_rates = {}, {}
    for kind, want in wanted.items():
        at = next((t for t, c in kinds if c[kind] >= want), None)
        finished[kind] = round(at - start, 1) if at and start else None
        if at and start:
            kind_rates[kind] = rate(want, start, at)
        elif kinds and start and end:
            kind_rates[kind] = rate(kinds[-1][1][kind], start, end)
    return finished, kind_rates


def ratio_by_kind(passes: dict) -> dict:
    """Pass 3's rate of each kind over pass 4's."""
    batched = (passes.get("pipeline") or {}).get("kind_events_per_s") or {}
    single = (passes.get("per_event") or {}).get("kind_events_per_s") or {}
    return {k: ratio(batched.get(k), single.get(k)) for k in batched}
