"""S3, the audit trail: every event and every processing outcome, searchable.

The audit consumer has its own consumer group (``<app id>-audit``), so it
reads every topic independently of S2.  It runs on its own (``python -m
streamapp.audit``, the default deployment) or inside the worker
(``AUDIT_IN_WORKER=true``, as the tests run it).  It hears both the
producers (the event topics) and S2 (the outcomes and dead-letter topics).

Offsets are committed only after a bulk request has been indexed, so when
the audit store is down nothing piles up in memory: the consumer stops
fetching, Kafka keeps the backlog, and indexing resumes where it stopped.
Document ids come from ``event_id`` (or the source offset for dead letters),
so a replay overwrites instead of duplicating.

PII never leaves the process: e-mails become a keyed hash, names are
reduced to an initial, card data and anything that looks like a secret or a
card number is dropped from the payload before indexing (``masking``).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, List, Optional, Tuple

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, IllegalGenerationError, RebalanceInProgressError, UnknownMemberIdError

from . import metrics
from .codec import Rejection, decode
from .config import Settings, settings
from .connections import kafka_client_options
from .masking import _FIELD_NAMES, email_hash, mask, scrub, scrub_detail  # noqa: F401  (re-exported)
from .records import Event
from .stores.audit import AuditStore
from .stores.retry import RetryPolicy, RetryStopped
from .topics import STREAMS, event_topic_names, output_topic_names

log = logging.getLogger(__name__)


def event_doc(event: Event, stream: str, cfg: Settings = settings) -> Dict[str, Any]:
    body = event.to_wire()
    doc = {
        "_id": event.event_id, "doc_kind": "event", "event_id": event.event_id,
        "event_type": event.TYPE, "stream": stream,
        "user_id": getattr(event, "user_id", None), "movie_id": getattr(event, "movie_id", None),
        "occurred_at": event.occurred_at, "recorded_at": datetime.now(timezone.utc),
        "payload": mask(orjson.loads(orjson.dumps(body, default=_plain)), cfg),
    }
    email = getattr(event, "email", None)
    if email:
        doc["email_hash"] = email_hash(email, cfg)
    return doc


def _plain(value: Any) -> Any:
    if hasattr(value, "asdict"):
        return value.asdict()
    raise TypeError(type(value).__name__)


def deadletter_doc(value: Optional[bytes], headers: Dict[str, str], cfg: Settings = settings) -> Dict[str, Any]:
    """A dead letter, described without its raw bytes (they may hold PII)."""
    source = f"{headers.get('x-source-topic')}:{headers.get('x-source-partition')}:" \
             f"{headers.get('x-source-offset')}"
    parsed = decode(value)
    preview: Dict[str, Any] = {"bytes": len(value or b""),
                               "sha256": hashlib.sha256(value or b"").hexdigest()}
    try:
        raw_json = orjson.loads(value or b"")
        if isinstance(raw_json, dict):
            # Only the contract's field names: an unknown field (or key) may
            # be anything, including PII under a name we cannot guess.
            preview["fields"] = mask(raw_json, cfg, _FIELD_NAMES)
    except orjson.JSONDecodeError:
        pass
    at = _parse_time(headers.get("x-rejected-at")) or datetime.now(timezone.utc)
    if isinstance(parsed, Rejection):
        event_type, event_id = parsed.event_type, parsed.event_id
    else:  # decoded, then refused by a store (``store_refused``)
        event_type, event_id = parsed.TYPE, parsed.event_id
    return {
        "_id": f"dl:{source}", "doc_kind": "deadletter", "status": "rejected",
        "reason": headers.get("x-reason"), "detail": scrub_detail(headers.get("x-detail")),
        "stream": (headers.get("x-source-topic") or "").rsplit(".", 1)[-1],
        "event_type": event_type, "event_id": event_id,
        "occurred_at": at, "recorded_at": datetime.now(timezone.utc), "payload": preview,
    }


def outcome_docs(value: Optional[bytes]) -> Iterable[Dict[str, Any]]:
    """One document per event named in an outcome message; none for a record
    that is no outcome (a tombstone, bytes that are not a JSON object with a
    status), which must not stop S3: anyone with write access can send one."""
    try:
        body = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or "status" not in body:
        return
    at = _parse_time(body.get("at")) or datetime.now(timezone.utc)
    for event_id, occurred_at, event_type in body.get("events", []):
        if not event_id:
            continue
        yield {
            "_id": f"{event_id}:{body.get('store')}:{body['status']}", "doc_kind": "outcome",
            "event_id": event_id, "event_type": event_type, "stream": body.get("stream"),
            "status": body["status"], "store": body.get("store"), "reason": body.get("reason"),
            "detail": scrub_detail(body.get("detail")),
            "occurred_at": _parse_time(occurred_at) or at, "recorded_at": at,
        }


def _parse_time(text: Optional[str]) -> Optional[datetime]:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def docs_for(topic: str, value: Optional[bytes], headers: Iterable[Tuple[str, bytes]],
             cfg: Settings = settings) -> List[dict]:
    """Audit documents for one Kafka record of any of our topics."""
    name = topic.rsplit(".", 1)[-1]
    if name == "outcomes":
        return list(outcome_docs(value))
    if name == "deadletter":
        return [deadletter_doc(value, {k: v.decode("utf-8", "replace") for k, v in headers}, cfg)]
    event = decode(value, STREAMS[name].event_types)
    if isinstance(event, Rejection):
        return []  # S2 dead-letters it; the dead-letter topic brings it here
    return [event_doc(event, name, cfg)]


class AuditTrail:
    """Consume every topic with its own group and bulk-index into the audit store."""

    def __init__(self, cfg: Settings = settings, store: Optional[AuditStore] = None) -> None:
        self.cfg = cfg
        self.store = store or AuditStore(cfg.elasticsearch_url, cfg.audit_index_prefix,
                                            cfg.audit_refresh_interval,
                                            ca_file=cfg.elasticsearch_ca_file)
        if store is None:  # backoff bounds from this configuration
            self.store.retry_policy = RetryPolicy.of(cfg, retry_unknown=False)
        self.topics = event_topic_names(cfg) + output_topic_names(cfg)
        self.indexed = 0

    def consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *self.topics, **kafka_client_options(self.cfg),
            group_id=f"{self.cfg.app_id}-audit", enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=2000,
            fetch_min_bytes=self.cfg.audit_fetch_min_bytes,
            fetch_max_wait_ms=self.cfg.audit_fetch_max_wait_ms,
            # While the audit store is down we stop polling; stay in the group.
            max_poll_interval_ms=30 * 60 * 1000,
            metadata_max_age_ms=5000)

    async def run(self, stop: Optional[asyncio.Event] = None) -> None:
        stop = stop or asyncio.Event()
        consumer = self.consumer()
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=2000)
                docs: List[dict] = []
                for tp, records in batches.items():
                    for record in records:
                        docs.extend(docs_for(tp.topic, record.value, record.headers or (), self.cfg))
                if docs and not await self._index_until_done(docs, stop):
                    break  # stopping: leave these offsets uncommitted
                if batches:
                    await self._commit(consumer)
        finally:
            await consumer.stop()
            await self.store.close()

    @staticmethod
    async def _commit(consumer: AIOKafkaConsumer) -> None:
        """Commit what was indexed, unless the group rebalanced meanwhile.

        Then the partitions' new owners (perhaps this process again) read on
        from the last commit and index those documents again, under the
        same ids: a rebalance costs repeated work, never a crash (it stopped
        a worker running S3 inside it when a second worker joined).
        """
        try:
            await consumer.commit()
        except (CommitFailedError, IllegalGenerationError, RebalanceInProgressError,
                UnknownMemberIdError) as exc:
            log.info("audit offsets not committed, the group rebalanced: %s", type(exc).__name__)

    async def _index_until_done(self, docs: List[dict], stop: asyncio.Event) -> bool:
        """Index ``docs``, retrying while the store is away; False if stopped first.

        Meanwhile the documents wait on Kafka (their offsets are not committed).
        """
        try:
            self.indexed += await self.store.write(lambda: self.store.index(docs), stop=stop)
        except RetryStopped:
            return False
        metrics.events_stored.labels(store="audit", stream="all").inc(len(docs))
        return True


async def main() -> None:
    """Run the audit trail on its own (``python -m streamapp.audit``)."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s %(message)s")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await AuditTrail().run(stop)


if __name__ == "__main__":
    asyncio.run(main())
