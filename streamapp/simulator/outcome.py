"""What a simulated (or replayed) stream should leave in the stores, and the
deliberately bad records that ``--bad-share`` mixes in."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Tuple

import orjson

from .. import records as r
from ..codec import encode
from ..topics import STREAM_OF_TYPE


@dataclass
class Outcome:
    """What the stores should hold after the stream is processed."""

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

    def account(self, e: r.Event) -> None:
        self.events[e.TYPE] += 1
        if e.TYPE == "user.registered":
            self.users.add(e.user_id)
        elif e.TYPE == "subscription.started":
            self.subscriptions.add(e.subscription_id)
        elif e.TYPE.startswith("payment."):
            self.payments += 1
        elif e.TYPE == "preference.set":
            self.preferences.add((e.user_id, e.key))
        elif e.TYPE == "rating.submitted":
            self.ratings += 1
            self.rating_sum += e.score
        elif e.TYPE == "title.upserted":
            self.titles.add(e.movie_id)
            self.removed.discard(e.movie_id)
        elif e.TYPE == "title.removed":
            self.removed.add(e.movie_id)

    def summary(self) -> dict:
        by_stream: Counter = Counter()
        for event_type, n in self.events.items():
            by_stream[STREAM_OF_TYPE[event_type]] += n
        return {
            "events": sum(self.events.values()) + sum(self.bad.values()),
            "valid": sum(self.events.values()),
            "per_topic": dict(sorted(by_stream.items())),
            "per_type": dict(sorted(self.events.items())),
            "bad_per_topic": dict(sorted(self.bad.items())),
            "expect": {
                "postgres": {"users": len(self.users), "subscriptions": len(self.subscriptions),
                             "payments": self.payments, "preferences": len(self.preferences),
                             "ratings": self.ratings, "rating_score_sum": self.rating_sum},
                "mongodb": {"movies": len(self.titles), "removed": len(self.removed),
                            "rated_votes": self.ratings},
                "redis": {t: self.events[t] for t in ("session.started", "session.heartbeat",
                                                      "session.ended", "rating.submitted")},
                "deadletter": sum(self.bad.values()),
            },
        }


def bad_event(rng: random.Random, rating: Callable[[], r.RatingSubmitted]
              ) -> Tuple[str, bytes, bytes, str]:
    """``(stream, key, value, reason)`` of a rating spoilt in one of seven ways."""
    good = rating()
    body = good.to_wire()
    choice = rng.randrange(7)
    if choice == 0:
        return "ratings", b"m00000", b'{"type": "rating.submitted", "event_id": ', "malformed_json"
    if choice == 1:
        body["score"] = 11
        reason = "out_of_range"
    elif choice == 2:
        body["score"] = "ten"
        reason = "wrong_type"
    elif choice == 3:
        del body["user_id"]
        reason = "missing_field"
    elif choice == 4:
        body["type"] = "rating.deleted"
        reason = "unknown_type"
    elif choice == 5:
        body["occurred_at"] = "9999-12-31T00:00:00+00:00"
        reason = "out_of_range"
    else:
        return "ratings", b"m00000", encode(good)[:-1] + b', "x": "\xff\xfe"}', "malformed_json"
    return "ratings", good.movie_id.encode(), orjson.dumps(body, default=str), reason
