"""Strict decoding of raw topic bytes into records, or a reason to reject.

Agents consume raw bytes rather than Faust-typed values on purpose: a typed
topic that fails to deserialize is logged and skipped by Faust, which would
lose the event.  Here every payload either becomes a record or a
``Rejection`` that goes to the dead-letter topic with the original bytes.

Types are checked strictly (no ``"5"`` for an int, no ``true`` for a number),
field by field (``streamapp.field_checks``); then the domain rules across
fields apply.  The contract's limits are defined once, in ``streamapp.limits``
(re-exported here).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Type, Union

import orjson

from .field_checks import Check, Invalid, build_record, canonical_event_id, json_type
from .limits import (
    EARLIEST,
    EVENT_ID_PATTERN,
    ID_FIELDS,
    ID_PATTERN,
    MAX_FUTURE,
    MAX_INT,
    MAX_LENGTHS,
    MAX_LIST,
    MAX_PAYLOAD_BYTES,
    MAX_STRING,
    PATTERNS,
    PLANS,
    RANGES,
    SCHEMA_VERSIONS,
    TIMESTAMP_PATTERN,
    has_card_number,
    limit_rows,
)
from .records import EVENT_TYPES, Event
from .wire import encode, key_of, partition_key, version

#: The decoder's names, and what it re-exports from ``limits``, ``records``
#: and ``wire`` (imported from here by the stores, agents, simulator and tests).
__all__ = [
    "Check", "Rejection", "canonical_event_id", "decode",
    "EARLIEST", "EVENT_ID_PATTERN", "ID_FIELDS", "ID_PATTERN", "MAX_FUTURE", "MAX_INT",
    "MAX_LENGTHS", "MAX_LIST", "MAX_PAYLOAD_BYTES", "MAX_STRING", "PATTERNS", "PLANS", "RANGES",
    "SCHEMA_VERSIONS", "TIMESTAMP_PATTERN", "has_card_number", "limit_rows",
    "EVENT_TYPES", "Event",
    "encode", "key_of", "partition_key", "version",
]


@dataclass(frozen=True)
class Rejection:
    """Why a payload could not become an event (machine-readable code)."""

    code: str
    detail: str
    event_type: Optional[str] = None
    event_id: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        return {"code": self.code, "detail": self.detail,
                "event_type": self.event_type, "event_id": self.event_id}


def decode(raw: Optional[bytes], allowed: Optional[frozenset] = None) -> Union[Event, Rejection]:
    """Turn one message value into an event, or say why not.

    ``allowed`` restricts the event types a topic accepts.  A rejection
    names the event's type and id when they could be read (a known type; an
    ``event_id`` spelled as the contract allows, in canonical form), and its
    detail never repeats a value of the payload: details reach the
    dead-letter headers, the outcomes topic and the audit trail.
    """
    if raw is None:
        return Rejection("empty", "message has no value")
    if len(raw) > MAX_PAYLOAD_BYTES:
        return Rejection("too_large", f"{len(raw)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejection("malformed_json", _json_error(exc))
    if not isinstance(data, dict):
        return Rejection("not_an_object", f"top level is {json_type(data)}")
    event_type = data.get("type")
    event_id = canonical_event_id(data.get("event_id"))
    if type(event_type) is not str or event_type not in EVENT_TYPES:
        return Rejection("unknown_type", "type is missing or not a known event type"
                         if event_type is None or type(event_type) is str
                         else f"type must be a string, not {json_type(event_type)}",
                         None, event_id)
    if allowed is not None and event_type not in allowed:
        return Rejection("wrong_topic", f"{event_type} does not belong on this topic",
                         event_type, event_id)
    try:
        return _build(EVENT_TYPES[event_type], data)
    except Invalid as exc:
        return Rejection(exc.code, exc.detail, event_type, event_id)


def _json_error(exc: orjson.JSONDecodeError) -> str:
    """Where the JSON broke, without the text around it."""
    return f"not valid JSON (line {exc.lineno}, column {exc.colno})"


def _build(cls: Type[Event], data: Dict[str, Any]) -> Event:
    version_ = data.get("schema_version")
    if version_ is not None:
        if type(version_) is not int:
            raise Invalid("wrong_type", f"schema_version must be an integer, "
                                        f"not {json_type(version_)}")
        if version_ not in SCHEMA_VERSIONS:
            raise Invalid("unsupported_version",
                          f"schema_version must be one of {sorted(SCHEMA_VERSIONS)}")
    event: Event = build_record(cls, data)
    _check_rules(event)
    return event


def _require(ok: bool, code: str, detail: str) -> None:
    if not ok:
        raise Invalid(code, detail)


def _check_rules(event: Event) -> None:
    """Rules across fields or beyond one field's format; one place, so
    docs/events.md can point here (per-field limits are checked with the
    field's type, in ``streamapp.field_checks``)."""
    fields = event.__dict__  # plain values (see ``build_record``); getattr costs more
    token = fields.get("card_token")
    if token is not None:
        _require(not has_card_number(token), "card_number", "card_token holds a card number")
    plan = fields.get("plan")
    if plan is not None:
        _require(plan in PLANS, "bad_value", f"plan must be one of {sorted(PLANS)}")
