"""Strict decoding of raw topic bytes into records, or a reason to reject.

Agents consume raw bytes rather than Faust-typed values on purpose: a typed
topic that fails to deserialize is logged and skipped by Faust, which would
lose the event.  Here every payload either becomes a record or a
``Rejection`` that goes to the dead-letter topic with the original bytes.

Types are checked strictly (no ``"5"`` for an int, no ``true`` for a number);
then the domain rules apply: the contract's limits are defined once, in
``streamapp.limits`` (re-exported here).
"""
from __future__ import annotations

import functools
import re
import typing
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Optional, Tuple, Type, Union

import orjson

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

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EVENT_ID = re.compile(EVENT_ID_PATTERN)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
_ID = re.compile(ID_PATTERN)
_PATTERNS = {name: re.compile(pattern) for name, pattern in PATTERNS.items()}


def canonical_event_id(value: Any) -> Optional[str]:
    """The canonical spelling of an ``event_id``, or None if it is not one."""
    if type(value) is not str:
        return None
    if _CANONICAL_UUID.fullmatch(value):
        return value
    if not _EVENT_ID.fullmatch(value):
        return None
    return str(uuid.UUID(value))


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
        return Rejection("not_an_object", f"top level is {_json_type(data)}")
    event_type = data.get("type")
    event_id = canonical_event_id(data.get("event_id"))
    if type(event_type) is not str or event_type not in EVENT_TYPES:
        return Rejection("unknown_type", "type is missing or not a known event type"
                         if event_type is None or type(event_type) is str
                         else f"type must be a string, not {_json_type(event_type)}",
                         None, event_id)
    if allowed is not None and event_type not in allowed:
        return Rejection("wrong_topic", f"{event_type} does not belong on this topic",
                         event_type, event_id)
    try:
        return _build(EVENT_TYPES[event_type], data)
    except _Invalid as exc:
        return Rejection(exc.code, exc.detail, event_type, event_id)


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (for details: never the value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _json_error(exc: orjson.JSONDecodeError) -> str:
    """Where the JSON broke, without the text around it."""
    return f"not valid JSON (line {exc.lineno}, column {exc.colno})"


def _build(cls: Type[Event], data: Dict[str, Any]) -> Event:
    version_ = data.get("schema_version")
    if version_ is not None:
        if type(version_) is not int:
            raise _Invalid("wrong_type", f"schema_version must be an integer, "
                                         f"not {_json_type(version_)}")
        if version_ not in SCHEMA_VERSIONS:
            raise _Invalid("unsupported_version",
                           f"schema_version must be one of {sorted(SCHEMA_VERSIONS)}")
    event: Event = _record(cls, data)
    _check_rules(event)
    return event


#: Checks one field's value: returns it (parsed, for timestamps and nested
#: records) or raises ``_Invalid``.
Check = Callable[[Any], Any]


@functools.cache
def _plan(cls: type) -> Tuple[Tuple[str, Check, bool, Any], ...]:
    """(field, check, has default, default) for each field of a record class.

    Reading type hints is slow, and every event of every topic passes
    through here (S2 and S3 both decode strictly), so each class's checks are
    built once from its hints.
    """
    hints = typing.get_type_hints(cls)
    options = cls._options  # type: ignore[attr-defined]  # set by faust.Record
    defaults = options.defaults
    return tuple((name, _check_for(name, hints[name]), name in defaults, defaults.get(name))
                 for name in options.fields)


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
    record: Any = object.__new__(cls)
    record.__dict__.update(values)
    record.__evaluated_fields__ = set()
    return record


def _wrong_type(name: str, expected: str, value: Any) -> _Invalid:
    return _Invalid("wrong_type", f"{name} must be {expected}, not {_json_type(value)}")


def _check_for(name: str, hint: Any, item: bool = False) -> Check:
    origin = typing.get_origin(hint)
    if origin is Union:  # Optional[X]
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _check_for(name, inner)
    if origin in (list, typing.List):
        (item_hint,) = typing.get_args(hint)
        check_item = _check_for(name, item_hint, item=True)

        def check_list(value: Any) -> list:
            if type(value) is not list:
                raise _wrong_type(name, "an array", value)
            if len(value) > MAX_LIST:
                raise _Invalid("too_long", f"{name} has {len(value)} items > {MAX_LIST}")
            return [check_item(v) for v in value]
        return check_list
    what = f"each item of {name}" if item else name
    if hint is str:
        limit = MAX_STRING if item else MAX_LENGTHS.get(name, MAX_STRING)
        if name == "event_id" and not item:
            def check_event_id(value: Any) -> str:
                if type(value) is not str:
                    raise _wrong_type(name, "a string", value)
                canonical = canonical_event_id(value)
                if canonical is None:
                    raise _Invalid("bad_id", "event_id must be a UUID (see the accepted spellings)")
                return canonical
            return check_event_id
        pattern: Optional[re.Pattern] = None
        code = "bad_value"
        if not item and name in ID_FIELDS:
            pattern, code = _ID, "bad_id"
        elif not item and name in _PATTERNS:
            pattern = _PATTERNS[name]

        def check_str(value: Any) -> str:
            if type(value) is not str:
                raise _wrong_type(what, "a string", value)
            if len(value) > limit:
                raise _Invalid("too_long", f"{what} is {len(value)} chars > {limit}")
            if "\x00" in value:
                raise _Invalid("bad_string", f"{what} contains NUL")
            if pattern is not None and not pattern.fullmatch(value):
                raise _Invalid(code, f"{name} must match {pattern.pattern}")
            return value
        return check_str
    if hint is int:
        low, high = RANGES.get(name, (-MAX_INT, MAX_INT))

        def check_int(value: Any) -> int:
            if type(value) is not int:  # not bool, not float
                raise _wrong_type(what, "an integer", value)
            if not low <= value <= high:
                raise _Invalid("out_of_range", f"{what} must be {low}..{high}")
            return value
        return check_int
    if hint is datetime:
        def check_time(value: Any) -> datetime:
            if type(value) is not str:
                raise _wrong_type(name, "an ISO-8601 string", value)
            if not _TIMESTAMP.fullmatch(value):
                raise _Invalid("bad_timestamp", f"{name} must be YYYY-MM-DDThh:mm:ss[.ffffff] "
                                                f"with Z or a +hh:mm offset")
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise _Invalid("bad_timestamp", f"{name} is not a valid date and time") from None
            if not EARLIEST <= parsed <= datetime.now(timezone.utc) + MAX_FUTURE:
                raise _Invalid("out_of_range", f"{name} must be from {EARLIEST:%Y-%m-%d} "
                                               f"to now + {MAX_FUTURE.days} day")
            return parsed
        return check_time
    if isinstance(hint, type) and hasattr(hint, "_options"):  # nested Record
        def check_record(value: Any) -> Any:
            if type(value) is not dict:
                raise _wrong_type(what, "an object", value)
            return _record(hint, value)
        return check_record
    raise TypeError(f"no rule for {hint!r}")  # pragma: no cover - schema bug


def _require(ok: bool, code: str, detail: str) -> None:
    if not ok:
        raise _Invalid(code, detail)


def _check_rules(event: Event) -> None:
    """Rules across fields or beyond one field's format; one place, so
    docs/events.md can point here (per-field limits are checked with the
    field's type, from the tables above)."""
    fields = event.__dict__  # plain values (see ``_record``); getattr costs more
    token = fields.get("card_token")
    if token is not None:
        _require(not has_card_number(token), "card_number", "card_token holds a card number")
    plan = fields.get("plan")
    if plan is not None:
        _require(plan in PLANS, "bad_value", f"plan must be one of {sorted(PLANS)}")
