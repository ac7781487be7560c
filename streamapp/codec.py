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
from typing import Any, Callable, Dict, Optional, Tuple, Type, Union

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

_CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
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
    event = _record(cls, data)
    _check_rules(event)
    return event


#: Checks one field's value: returns it (parsed, for timestamps and nested
#: records) or raises ``_Invalid``.
Check = Callable[[Any], Any]


@functools.lru_cache(maxsize=None)
def _plan(cls: type) -> Tuple[Tuple[str, Check, bool, Any], ...]:
    """(field, check, has default, default) for each field of a record class.

    Reading type hints is slow, and every event of every topic passes
    through here (S2 and S3 both decode strictly), so each class's checks are
    built once from its hints.
    """
    hints = typing.get_type_hints(cls)
    defaults = cls._options.defaults
    return tuple((name, _check_for(name, hints[name]), name in defaults, defaults.get(name))
                 for name in cls._options.fields)


def _record(cls: type, data: Dict[str, Any]) -> Any:
    """A record of ``cls`` from checked fields of ``data``.

    Built the way the record's generated ``__init__`` would, minus its
    per-field coercion: the values are already checked and parsed, and
    ``__init__`` cost more than the checks (``test_codec`` holds the two
    to the same result).
    """
    values: Dict[str, Any] = {}
    for name, check, has_default, default in _plan(cls):
        value = data.get(name)
        if value is None:
            if not has_default:
                raise _Invalid("missing_field", f"{name} is required")
            values[name] = default
        else:
            values[name] = check(value)
    record = cls.__new__(cls)
    record.__dict__.update(values)
    record.__evaluated_fields__ = set()
    return record


def _check_for(name: str, hint: Any) -> Check:
    origin = typing.get_origin(hint)
    if origin is Union:  # Optional[X]
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _check_for(name, inner)
    if origin in (list, typing.List):
        (item_hint,) = typing.get_args(hint)
        check_item = _check_for(name, item_hint)

        def check_list(value: Any) -> list:
            if not isinstance(value, list):
                raise _Invalid("wrong_type", f"{name} must be a list")
            if len(value) > MAX_LIST:
                raise _Invalid("too_long", f"{name} has {len(value)} items > {MAX_LIST}")
            return [check_item(item) for item in value]
        return check_list
    if hint is str:
        def check_str(value: Any) -> str:
            if type(value) is not str:
                raise _Invalid("wrong_type", f"{name} must be a string")
            if len(value) > MAX_STRING:
                raise _Invalid("too_long", f"{name} is {len(value)} chars > {MAX_STRING}")
            if "\x00" in value:
                raise _Invalid("bad_string", f"{name} contains NUL")
            return value
        return check_str
    if hint is int:
        def check_int(value: Any) -> int:
            if type(value) is not int:  # not bool, not float
                raise _Invalid("wrong_type", f"{name} must be an integer")
            if abs(value) > 2**31 - 1:
                raise _Invalid("out_of_range", f"{name} does not fit 32 bits")
            return value
        return check_int
    if hint is datetime:
        def check_time(value: Any) -> datetime:
            if not isinstance(value, str):
                raise _Invalid("wrong_type", f"{name} must be an ISO-8601 string")
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise _Invalid("bad_timestamp", f"{name} is not ISO-8601") from None
            if parsed.tzinfo is None:
                raise _Invalid("bad_timestamp", f"{name} has no timezone")
            if not EARLIEST <= parsed <= datetime.now(timezone.utc) + MAX_FUTURE:
                raise _Invalid("out_of_range", f"{name} {value[:40]} is not plausible")
            return parsed
        return check_time
    if isinstance(hint, type) and hasattr(hint, "_options"):  # nested Record
        def check_record(value: Any) -> Any:
            if not isinstance(value, dict):
                raise _Invalid("wrong_type", f"{name} must be an object")
            return _record(hint, value)
        return check_record
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
    fields = event.__dict__  # plain values (see ``_record``); getattr costs more
    # One spelling per id (lower case, hyphens): ids are idempotency keys.
    if not _CANONICAL_UUID.match(fields["event_id"]):
        try:
            fields["event_id"] = str(uuid.UUID(fields["event_id"]))
        except ValueError:
            raise _Invalid("bad_id", "event_id must be a UUID") from None
    for id_field in ("user_id", "movie_id", "session_id", "subscription_id", "payment_id"):
        value = fields.get(id_field)
        if value is not None:
            _require(bool(_ID.match(value)), "bad_id", f"{id_field} has invalid characters")
    for money in ("amount_cents", "price_cents"):
        value = fields.get(money)
        if value is not None:
            _require(0 < value <= 1_000_000, "out_of_range", f"{money} must be 1..1000000")
    currency = fields.get("currency")
    if currency is not None:
        _require(bool(_CURRENCY.match(currency)), "bad_value", "currency must be ISO 4217")
    last4 = fields.get("card_last4")
    if last4 is not None:
        _require(bool(_LAST4.match(last4)), "bad_value", "card_last4 must be 4 digits")
    token = fields.get("card_token")
    if token is not None:
        _require(bool(_TOKEN.match(token)), "bad_value", "card_token must be tok_ + 8..64 alphanumerics")
        _require(not has_card_number(token), "card_number", "card_token holds a card number")
    plan = fields.get("plan")
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

