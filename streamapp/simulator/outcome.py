"""What the stores should hold after a simulated stream is processed."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..topics import STREAM_OF_TYPE


@dataclass
class Outcome:
    """What the stores should hold after the simulated stream is processed."""

    events: Counter = field(default_factory=Counter)
    bad: Counter = field(default_factory=Counter)
    users: set = field(default_factory=set)
    subscriptions: set = field(default_factory=set)
    payments: int = 0
    preferences: set = field(default_factory=set)
    ratings: int = 0
    rating_sum: int = 0
    titles: set = field(default_factory=set)
    removed: set = field(default_factory=set)


def summarize(o: Outcome) -> dict:
    """Counts per topic and type, and what each store should hold."""
    by_stream: Counter = Counter()
    for event_type, n in o.events.items():
        by_stream[STREAM_OF_TYPE[event_type]] += n
    return {
        "events": sum(o.events.values()) + sum(o.bad.values()),
        "valid": sum(o.events.values()),
        "per_topic": dict(sorted(by_stream.items())),
        "per_type": dict(sorted(o.events.items())),
        "bad_per_topic": dict(sorted(o.bad.items())),
        "expect": {
            "postgres": {"users": len(o.users), "subscriptions": len(o.subscriptions),
                         "payments": o.payments, "preferences": len(o.preferences),
                         "ratings": o.ratings, "rating_score_sum": o.rating_sum},
            "mongodb": {"movies": len(o.titles), "removed": len(o.removed),
                        "rated_votes": o.ratings},
            "redis": {t: o.events[t] for t in ("session.started", "session.heartbeat",
                                               "session.ended", "rating.submitted")},
            "deadletter": sum(o.bad.values()),
        },
    }
