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

# --- Every limit of the contract, defined once ---------------------------
#
# docs/events.md ("Limits") lists exactly these values, and the stores'
# constraints (the SQL migrations) are no tighter: tests/contract checks both,
# so an event this codec accepts is never refused by a store.

#: Largest accepted message; anything bigger is rejected unread.
MAX_PAYLOAD_BYTES = 64 * 1024
#: Longest string field by default, in characters (Unicode code points).
MAX_STRING = 4000
#: Fields with a tighter length limit than ``MAX_STRING`` (characters).
#: ``display_name`` is what the ``users`` table holds.
MAX_LENGTHS: Dict[str, int] = {"display_name": 200, "value": 256}
#: Most items in any list field.
MAX_LIST = 200
#: Largest absolute value of any integer field (PostgreSQL ``integer``).
MAX_INT = 2**31 - 1
#: Inclusive ranges of the integer fields that have one.
RANGES: Dict[str, Tuple[int, int]] = {
    "birth_year": (1900, 2025),
    "price_cents": (1, 1_000_000),
    "amount_cents": (1, 1_000_000),
    "score": (1, 10),
    "position_s": (0, 86_400),
    "watched_s": (0, 86_400),
    "year": (1888, 2100),
    "runtime_min": (1, 1000),
    "width": (1, 20_000),    # artwork
    "height": (1, 20_000),   # artwork
}
#: Events more than this far in the future are clock bugs, not events.
MAX_FUTURE = timedelta(days=1)
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)

#: Fields holding an id of ours (``bad_id`` when they do not match ``ID_PATTERN``).
ID_FIELDS = ("user_id", "movie_id", "session_id", "subscription_id", "payment_id")
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
#: Format of string fields, matched against the whole value (``bad_value``).
PATTERNS: Dict[str, str] = {
    "email": r"[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,}",
    "country": r"[A-Z]{2}",
    "currency": r"[A-Z]{3}",
    "card_last4": r"[0-9]{4}",
    "card_token": r"tok_[A-Za-z0-9]{8,64}",
    "key": r"[a-z][a-z0-9_.]{0,63}",   # preference key
}
#: ``event_id`` spellings accepted; each is read as its UUID and stored in the
#: canonical lower-case 8-4-4-4-12 form.
EVENT_ID_PATTERN = (r"(?:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
                    r"|\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}"
                    r"|urn:uuid:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
                    r"|[0-9A-Fa-f]{32})")
#: ``occurred_at``: ISO 8601 extended form, seconds, 0-6 fraction digits, and
#: ``Z`` or a ``+hh:mm``/``-hh:mm`` offset.
TIMESTAMP_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
PLANS = frozenset({"basic", "standard", "premium"})
SCHEMA_VERSIONS = frozenset({1})

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EVENT_ID = re.compile(EVENT_ID_PATTERN)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
_ID = re.compile(ID_PATTERN)
_PATTERNS = {name: re.compile(pattern) for name, pattern in PATTERNS.items()}
_DIGIT_RUN = re.compile(r"\d{13,19}")


#: How the Limits table names fields whose name alone is ambiguous.
_LABELS = {"value": "`value` (`preference.set`)", "key": "`key` (`preference.set`)",
           "width": "`width` (each `artwork` item)", "height": "`height` (each `artwork` item)"}


def limit_rows() -> Tuple[str, ...]:
    """The rows of the "Limits" table in docs/events.md, from the values above
    (``tests/contract`` checks that the page has every one of them)."""
    def code(text: str) -> str:
        return "`" + text.replace("|", "\\|") + "`"  # a table cell: escape the pipes
    rows = [
        ("Value size", f"at most {MAX_PAYLOAD_BYTES} bytes", "too_large"),
        ("`schema_version`", f"one of {', '.join(map(str, sorted(SCHEMA_VERSIONS)))}",
         "unsupported_version"),
        ("`event_id`", f"matches {code(EVENT_ID_PATTERN)}", "bad_id"),
        ("`occurred_at`", f"matches {code(TIMESTAMP_PATTERN)}", "bad_timestamp"),
        ("`occurred_at`", f"from {EARLIEST:%Y-%m-%dT%H:%M:%SZ} to now + "
                          f"{MAX_FUTURE.days} day", "out_of_range"),
        ("Any string (list items too)", f"at most {MAX_STRING} characters, no NUL",
         "too_long`, `bad_string"),
        *((_LABELS.get(name, code(name)), f"at most {limit} characters", "too_long")
          for name, limit in sorted(MAX_LENGTHS.items())),
        ("Any list", f"at most {MAX_LIST} items", "too_long"),
        ("Any integer", f"-{MAX_INT}..{MAX_INT}", "out_of_range"),
        *((_LABELS.get(name, code(name)), f"{low}..{high}", "out_of_range")
          for name, (low, high) in RANGES.items()),
        (", ".join(code(n) for n in ID_FIELDS), f"matches {code(ID_PATTERN)}", "bad_id"),
        *((_LABELS.get(name, code(name)), f"matches {code(pattern)}", "bad_value")
          for name, pattern in PATTERNS.items()),
        ("`plan`", f"one of {', '.join(sorted(PLANS))}", "bad_value"),
    ]
    return tuple(f"| {what} | {rule} | `{reason}` |" for what, rule, reason in rows)


def canonical_event_id(value: Any) -> Optional[str]:
    """The canonical spelling of an ``event_id``, or None if it is not one."""
    if type(value) is not str:
        return None
    if _CANONICAL_UUID.fullmatch(value):
        return value
    if not _EVENT_ID.fullmatch(value):
        return None
    return str(uuid.UUID(value))


def version(event: Event) -> str:
    """An event's rank for "newest wins", as text that sorts bytewise.

    ``occurred_at`` in UTC with microseconds, then the canonical
    ``event_id``: the newest event wins, and on equal times the greater
    ``event_id``.  Stored next to the state it decided, so that a later
    batch compares with it (``COLLATE "C"`` in PostgreSQL).
    """
    at = event.occurred_at.astimezone(timezone.utc)
    return f"{at:%Y-%m-%dT%H:%M:%S.%f}Z|{event.event_id}"


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

