"""Strict decoding of raw topic bytes into records, or a reason to reject.

Agents consume raw bytes rather than Faust-typed values on purpose: a typed
topic that fails to deserialize is logged and skipped by Faust, which would
lose the event.  Here every payload either becomes a record or a
``Rejection`` that goes to the dead-letter topic with the original bytes.

Types are checked strictly (no ``"5"`` for an int, no ``true`` for a number);
then the domain rules below apply.
"""
from __future__ import annotations

import functools
import re
import typing
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Optional, Type, Union

import orjson

from .records import EVENT_TYPES, Event

#: Largest accepted message; anything bigger is rejected unread.
MAX_PAYLOAD_BYTES = 64 * 1024
#: Longest accepted string field (titles, synopses are the long ones).
MAX_STRING = 4000
MAX_LIST = 200
#: Events more than this far in the future are clock bugs, not events.
MAX_FUTURE = timedelta(days=1)
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_LAST4 = re.compile(r"^[0-9]{4}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,}$")
PLANS = frozenset({"basic", "standard", "premium"})
_TOKEN = re.compile(r"^tok_[A-Za-z0-9]{8,64}$")
_DIGIT_RUN = re.compile(r"\d{13,19}")
_PREF_KEY = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")


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


class _Invalid(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def decode(raw: Optional[bytes], allowed: Optional[frozenset] = None) -> Union[Event, Rejection]:
    """Turn one message value into an event, or say why not.

    ``allowed`` restricts the event types a topic accepts.
    """
    if raw is None:
        return Rejection("empty", "message has no value")
    if len(raw) > MAX_PAYLOAD_BYTES:
        return Rejection("too_large", f"{len(raw)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejection("malformed_json", str(exc)[:200])
    if not isinstance(data, dict):
        return Rejection("not_an_object", f"top level is {type(data).__name__}")
    event_type = data.get("type")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        return Rejection("unknown_type", f"unknown event type {str(event_type)[:64]!r}",
                         None, event_id)
    if allowed is not None and event_type not in allowed:
        return Rejection("wrong_topic", f"{event_type} does not belong on this topic",
                         event_type, event_id)
    try:
        return _build(EVENT_TYPES[event_type], data)
    except _Invalid as exc:
        return Rejection(exc.code, exc.detail, event_type, event_id)


def _build(cls: Type[Event], data: Dict[str, Any]) -> Event:
    version = data.get("schema_version", 1)
    if version != 1:
        raise _Invalid("unsupported_version", f"schema_version {version!r}")
    values = _check_fields(cls, data)
    event = cls(**values)
    _check_rules(event)
    return event


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> Dict[str, Any]:
    """Field types of a record class (resolving them is slow; do it once)."""
    return typing.get_type_hints(cls)


def _check_fields(cls: type, data: Dict[str, Any]) -> Dict[str, Any]:
    hints = _hints(cls)
    defaults = cls._options.defaults
    values: Dict[str, Any] = {}
    for name in cls._options.fields:
        if name not in data or data[name] is None:
            if name in defaults:
                values[name] = defaults[name]
                continue
            raise _Invalid("missing_field", f"{name} is required")
        values[name] = _check_value(name, hints[name], data[name])
    return values


def _check_value(name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is Union:  # Optional[X]
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _check_value(name, inner, value)
    if origin in (list, typing.List):
        (inner,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise _Invalid("wrong_type", f"{name} must be a list")
        if len(value) > MAX_LIST:
            raise _Invalid("too_long", f"{name} has {len(value)} items > {MAX_LIST}")
        return [_check_value(name, inner, item) for item in value]
    if hint is str:
        if not isinstance(value, str):
            raise _Invalid("wrong_type", f"{name} must be a string")
        if len(value) > MAX_STRING:
            raise _Invalid("too_long", f"{name} is {len(value)} chars > {MAX_STRING}")
        if "\x00" in value:
            raise _Invalid("bad_string", f"{name} contains NUL")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid("wrong_type", f"{name} must be an integer")
        if abs(value) > 2**31 - 1:
            raise _Invalid("out_of_range", f"{name} does not fit 32 bits")
        return value
    if hint is datetime:
        if not isinstance(value, str):
            raise _Invalid("wrong_type", f"{name} must be an ISO-8601 string")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise _Invalid("bad_timestamp", f"{name} is not ISO-8601") from None
        if parsed.tzinfo is None:
            raise _Invalid("bad_timestamp", f"{name} has no timezone")
        now = datetime.now(timezone.utc)
        if not EARLIEST <= parsed <= now + MAX_FUTURE:
            raise _Invalid("out_of_range", f"{name} {value[:40]} is not plausible")
        return parsed
    if isinstance(hint, type) and hasattr(hint, "_options"):  # nested Record
        if not isinstance(value, dict):
            raise _Invalid("wrong_type", f"{name} must be an object")
        return hint(**_check_fields(hint, value))
    raise TypeError(f"no rule for {hint!r}")  # pragma: no cover - schema bug


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def has_card_number(text: str) -> bool:
    """A 13-19 digit run that passes the Luhn check: a primary account number."""
    return any(_luhn_ok(run) for run in _DIGIT_RUN.findall(text))


def _require(ok: bool, code: str, detail: str) -> None:
    if not ok:
        raise _Invalid(code, detail)


def _check_rules(event: Event) -> None:
    """Domain rules; one place, so docs/events.md can point here."""
    try:
        # One spelling per id (lower case, hyphens): ids are idempotency keys.
        event.event_id = str(uuid.UUID(event.event_id))
    except ValueError:
        raise _Invalid("bad_id", "event_id must be a UUID") from None
    for id_field in ("user_id", "movie_id", "session_id", "subscription_id", "payment_id"):
        value = getattr(event, id_field, None)
        if value is not None:
            _require(bool(_ID.match(value)), "bad_id", f"{id_field} has invalid characters")
    for money in ("amount_cents", "price_cents"):
        value = getattr(event, money, None)
        if value is not None:
            _require(0 < value <= 1_000_000, "out_of_range", f"{money} must be 1..1000000")
    currency = getattr(event, "currency", None)
    if currency is not None:
        _require(bool(_CURRENCY.match(currency)), "bad_value", "currency must be ISO 4217")
    last4 = getattr(event, "card_last4", None)
    if last4 is not None:
        _require(bool(_LAST4.match(last4)), "bad_value", "card_last4 must be 4 digits")
    token = getattr(event, "card_token", None)
    if token is not None:
        _require(bool(_TOKEN.match(token)), "bad_value", "card_token must be tok_ + 8..64 alphanumerics")
        _require(not has_card_number(token), "card_number", "card_token holds a card number")
    plan = getattr(event, "plan", None)
    if plan is not None:
        _require(plan in PLANS, "bad_value", f"plan must be one of {sorted(PLANS)}")
    kind = event.TYPE
    if kind == "rating.submitted":
        _require(1 <= event.score <= 10, "out_of_range", "score must be 1..10")
    elif kind == "user.registered":
        _require(bool(_EMAIL.match(event.email)), "bad_value", "email is not an address")
        _require(bool(_COUNTRY.match(event.country)), "bad_value", "country must be ISO 3166 alpha-2")
        _require(1900 <= event.birth_year <= 2025, "out_of_range", "birth_year out of range")
    elif kind == "user.updated":
        if event.email is not None:
            _require(bool(_EMAIL.match(event.email)), "bad_value", "email is not an address")
        if event.country is not None:
            _require(bool(_COUNTRY.match(event.country)), "bad_value", "country must be ISO 3166 alpha-2")
    elif kind == "preference.set":
        _require(bool(_PREF_KEY.match(event.key)), "bad_value", "preference key must be lower_snake")
        _require(len(event.value) <= 256, "too_long", "preference value > 256 chars")
    elif kind == "title.upserted":
        _require(1888 <= event.year <= 2100, "out_of_range", "year out of range")
        _require(0 < event.runtime_min <= 1000, "out_of_range", "runtime_min out of range")
        for art in event.artwork:
            _require(0 < art.width <= 20000 and 0 < art.height <= 20000, "out_of_range",
                     "artwork size out of range")
    elif kind in ("session.heartbeat", "session.ended"):
        seconds = event.position_s if kind == "session.heartbeat" else event.watched_s
        _require(0 <= seconds <= 86400, "out_of_range", "seconds out of range")


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
        return event.movie_id
    return event.user_id

