"""Topics: one per kind of data, JSON on the wire, keyed for ordering.

Events that must stay in order share a topic and a key: everything about a
user (sign-up, subscription, payments, preferences, sessions) is keyed by
``user_id``; ratings and catalog edits by ``movie_id``, so the per-title
tables are co-partitioned with the ratings stream.

Values are consumed as raw bytes and decoded by ``streamapp.codec``; see its
docstring for why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List

from faust.types import TopicT

from .app import app
from .config import Settings, settings


@dataclass(frozen=True)
class Stream:
    """A source topic and the event types it accepts."""

    name: str
    event_types: FrozenSet[str]

    @property
    def topic_name(self) -> str:
        return settings.topic(self.name)


STREAMS: Dict[str, Stream] = {s.name: s for s in (
    Stream("users", frozenset({"user.registered", "user.updated"})),
    Stream("subscriptions", frozenset({
        "subscription.started", "subscription.changed", "subscription.cancelled"})),
    Stream("payments", frozenset({"payment.processed", "payment.failed"})),
    Stream("preferences", frozenset({"preference.set"})),
    Stream("ratings", frozenset({"rating.submitted"})),
    Stream("sessions", frozenset({"session.started", "session.heartbeat", "session.ended"})),
    Stream("catalog", frozenset({"title.upserted", "title.removed"})),
)}

#: Which stream each event type belongs on.
STREAM_OF_TYPE: Dict[str, str] = {t: s.name for s in STREAMS.values() for t in s.event_types}
#: Which stream each of our topics carries, and the event types it accepts.
STREAM_OF_TOPIC: Dict[str, str] = {s.topic_name: s.name for s in STREAMS.values()}
TYPES_OF_TOPIC: Dict[str, FrozenSet[str]] = {s.topic_name: s.event_types for s in STREAMS.values()}

#: The account streams: one agent, one PostgreSQL transaction per batch.
ACCOUNT_STREAMS = ("users", "subscriptions", "payments", "preferences")


def event_topic_names(cfg: Settings = settings) -> List[str]:
    """The topics producers write events to, one per stream."""
    return [cfg.topic(name) for name in STREAMS]


def output_topic_names(cfg: Settings = settings) -> List[str]:
    """The topics S2 writes to: dead letters and outcomes."""
    return [cfg.output_topic("deadletter"), cfg.output_topic("outcomes")]


def event_topic_config(cfg: Settings = settings) -> Dict[str, str]:
    """Kafka configs of the topics producers write events to: kept by size.

    Producers set each record's timestamp to the event's ``occurred_at``
    (docs/events.md), which may be years old.  Kafka's default deletes by
    record time (7 days): its next retention check deletes a partition whose
    newest record is that old, read or not, and a consumer behind it resets
    past the hole (S2 held back by a store outage, the audit trail behind
    S2).  Size-based retention deletes in log order only.
    """
    return {"retention.ms": "-1", "retention.bytes": str(cfg.topic_retention_bytes)}


def _topic(*names: str, output: bool = False, **kwargs: Any) -> TopicT:
    full = settings.output_topic if output else settings.topic
    return app.topic(
        *(full(name) for name in names),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
        replicas=settings.topic_replicas,
        internal=True,  # declared (created) by the worker with our partition count
        # S2's own topics carry the time S2 wrote them: Kafka's time retention is right.
        config=None if output else event_topic_config(),
        **kwargs,
    )


#: Everything about accounts, read together: a user's sign-up, subscription,
#: payments and preferences touch the same rows, so they are written by one
#: agent in one transaction per batch (no lock waits, no deadlocks between
#: per-topic transactions, and four times fewer round trips).
account_topics = _topic(*ACCOUNT_STREAMS)
ratings_topic = _topic("ratings")
sessions_topic = _topic("sessions")
catalog_topic = _topic("catalog")

#: Everything that could not be decoded or validated: original bytes in the
#: value, the reason in headers (``x-reason``, ``x-source-topic`` ...).
deadletter_topic = _topic("deadletter", output=True)
#: What S2 did with each batch (stored / rejected / retried, per store);
#: consumed by the audit agent (S3) and anyone who wants to react to it.
outcomes_topic = _topic("outcomes", output=True)
