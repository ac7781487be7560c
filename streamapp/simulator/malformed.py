"""Deliberately bad input for the dead-letter path: a rating spoiled in one
of seven ways, with the reason the decoder should give."""
from __future__ import annotations

import random
from typing import Tuple

import orjson

from .. import records as r
from ..codec import encode


def malformed_rating(rng: random.Random, good: r.RatingSubmitted) -> Tuple[str, bytes, bytes, str]:
    """(topic, key, value, expected reason) for one spoiled copy of ``good``."""
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
