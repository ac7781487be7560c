"""Event records: one ``faust.Record`` per event kind.

Every event carries ``event_id`` (a UUID, the idempotency key of every write),
``occurred_at`` (when it happened, timezone-aware) and ``schema_version``.
The wire format is JSON with a ``type`` discriminator, so any Kafka client can
produce events; ``docs/events.md`` is the contract.

Records describe shape only.  Domain rules (ranges, sizes, formats) live in
``streamapp.codec`` next to the strict decoder, so a bad payload is rejected
with a reason instead of being coerced into something plausible.
"""
from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Dict, List, Optional, Type

import faust

SCHEMA_VERSION = 1

#: The catalog's genre vocabulary: the simulator draws from it, and the read
#: API serves a genre leaderboard for each.
GENRES = ("action", "adventure", "animation", "comedy", "crime", "documentary", "drama",
          "family", "fantasy", "horror", "mystery", "romance", "sci-fi", "thriller", "western")


class Event(faust.Record, abstract=True, serializer="json", isodates=True,
            include_metadata=False):
    """Fields shared by every event."""

    #: wire name of the event, e.g. ``rating.submitted``; set per subclass.
    TYPE: ClassVar[str] = ""

    event_id: str
    occurred_at: datetime

    def to_wire(self) -> dict:
        """The JSON object producers put on the topic (``type`` first)."""
        body = self.asdict()
        body["occurred_at"] = self.occurred_at.isoformat()
        return {"type": self.TYPE, "schema_version": SCHEMA_VERSION, **body}


# --- accounts: users, subscriptions, payments, preferences (keyed by user_id)

class UserRegistered(Event):
    TYPE = "user.registered"
    user_id: str
    email: str
    display_name: str
    country: str
    birth_year: int


class UserUpdated(Event):
    TYPE = "user.updated"
    user_id: str
    display_name: Optional[str] = None
    country: Optional[str] = None
    email: Optional[str] = None


class SubscriptionStarted(Event):
    TYPE = "subscription.started"
    subscription_id: str
    user_id: str
    plan: str
    price_cents: int
    currency: str


class SubscriptionChanged(Event):
    TYPE = "subscription.changed"
    subscription_id: str
    user_id: str
    plan: str
    price_cents: int
    currency: str


class SubscriptionCancelled(Event):
    TYPE = "subscription.cancelled"
    subscription_id: str
    user_id: str
    reason: str


class PaymentProcessed(Event):
    """A successful charge.  Card data is a token and the last four digits."""

    TYPE = "payment.processed"
    payment_id: str
    user_id: str
    subscription_id: str
    amount_cents: int
    currency: str
    card_token: str
    card_last4: str


class PaymentFailed(Event):
    TYPE = "payment.failed"
    payment_id: str
    user_id: str
    subscription_id: str
    amount_cents: int
    currency: str
    card_token: str
    card_last4: str
    failure_reason: str


class PreferenceSet(Event):
    TYPE = "preference.set"
    user_id: str
    key: str
    value: str


# --- ratings (keyed by movie_id, so per-title tables are co-partitioned)

class RatingSubmitted(Event):
    TYPE = "rating.submitted"
    user_id: str
    movie_id: str
    score: int


# --- viewing sessions (keyed by user_id)

class SessionStarted(Event):
    TYPE = "session.started"
    session_id: str
    user_id: str
    movie_id: str
    device: str


class SessionHeartbeat(Event):
    TYPE = "session.heartbeat"
    session_id: str
    user_id: str
    movie_id: str
    position_s: int


class SessionEnded(Event):
    TYPE = "session.ended"
    session_id: str
    user_id: str
    movie_id: str
    watched_s: int


# --- catalog (keyed by movie_id)

class CastMember(faust.Record, serializer="json"):
    name: str
    role: str


class Artwork(faust.Record, serializer="json"):
    """Display blob metadata: where the image lives and how to show it."""

    kind: str
    url: str
    width: int
    height: int
    dominant_color: str


class TitleUpserted(Event):
    TYPE = "title.upserted"
    movie_id: str
    title: str
    year: int
    genres: List[str]
    cast: List[CastMember]
    directors: List[str]
    similar: List[str]
    artwork: List[Artwork]
    synopsis: str
    runtime_min: int


class TitleRemoved(Event):
    TYPE = "title.removed"
    movie_id: str
    reason: str


#: Event classes by wire ``type``.
EVENT_TYPES: Dict[str, Type[Event]] = {
    cls.TYPE: cls
    for cls in (
        UserRegistered, UserUpdated,
        SubscriptionStarted, SubscriptionChanged, SubscriptionCancelled,
        PaymentProcessed, PaymentFailed, PreferenceSet, RatingSubmitted,
        SessionStarted, SessionHeartbeat, SessionEnded,
        TitleUpserted, TitleRemoved,
    )
}
