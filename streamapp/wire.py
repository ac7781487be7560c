"""What a producer and the stores share about an event beyond its shape:
its wire bytes, its partition key, and its rank for "newest wins".
(``streamapp.codec`` re-exports them next to the decoder.)"""
from __future__ import annotations

from datetime import timezone
from typing import Any

import orjson

from .records import Event


def version(event: Event) -> str:
    """An event's rank for "newest wins", as text that sorts bytewise.

    ``occurred_at`` in UTC with microseconds, then the canonical
    ``event_id``: the newest event wins, and on equal times the greater
    ``event_id``.  Stored next to the state it decided, so that a later
    batch compares with it (``COLLATE "C"`` in PostgreSQL).
    """
    at = event.occurred_at.astimezone(timezone.utc)
    return f"{at:%Y-%m-%dT%H:%M:%S.%f}Z|{event.event_id}"


def encode(event: Event) -> bytes:
    """Wire bytes of an event (used by the simulator and tests)."""
    return orjson.dumps(event.to_wire(), default=_nested)


def _nested(value: Any) -> Any:
    """orjson hook for nested records (cast members, artwork)."""
    if hasattr(value, "asdict"):
        return value.asdict()
    raise TypeError(f"cannot encode {type(value).__name__}")


def key_of(event: Event) -> bytes:
    """Partition key: everything about a user, or a title, stays in order."""
    return partition_key(event).encode()


def partition_key(event: Event) -> str:
    if event.TYPE.startswith(("rating.", "title.")):
        return str(event.movie_id)
    return str(event.user_id)
