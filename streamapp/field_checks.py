"""The strict decoder's per-field checks, built once per record class from its type hints.

``streamapp.codec`` decodes payloads with them.  A check returns the
field's value (parsed, for timestamps and nested records) or raises
``Invalid`` with a machine-readable code and a detail that never repeats
the value: details reach the dead-letter headers, the outcomes topic and
the audit trail.  The limits come from ``streamapp.limits``.
"""
from __future__ import annotations

import functools
import re
import typing
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Optional, Tuple, Union

from .limits import (
    EARLIEST,
    EVENT_ID_PATTERN,
    ID_FIELDS,
    ID_PATTERN,
    MAX_FUTURE,
    MAX_INT,
    MAX_LENGTHS,
    MAX_LIST,
    MAX_STRING,
    PATTERNS,
    RANGES,
    TIMESTAMP_PATTERN,
)

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


class Invalid(Exception):
    """A payload breaks the contract: ``code`` says how, ``detail`` where."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def json_type(value: Any) -> str:
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


#: Checks one field's value: returns it (parsed, for timestamps and nested
#: records) or raises ``Invalid``.
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
    return tuple((name, check_for(name, hints[name]), name in defaults, defaults.get(name))
                 for name in options.fields)


def build_record(cls: type, data: Dict[str, Any]) -> Any:
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
                raise Invalid("missing_field", f"{name} is required")
            values[name] = default
        else:
            values[name] = check(value)
    record: Any = object.__new__(cls)
    record.__dict__.update(values)
    record.__evaluated_fields__ = set()
    return record


def _wrong_type(name: str, expected: str, value: Any) -> Invalid:
    return Invalid("wrong_type", f"{name} must be {expected}, not {json_type(value)}")


def check_for(name: str, hint: Any, item: bool = False) -> Check:
    """The check of field ``name`` (or of each of its items) for its type hint."""
    origin = typing.get_origin(hint)
    if origin is Union:  # Optional[X]
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return check_for(name, inner)
    if origin in (list, typing.List):
        return _list_check(name, hint)
    what = f"each item of {name}" if item else name
    if hint is str:
        if name == "event_id" and not item:
            return _event_id_check(name)
        return _str_check(name, what, item)
    if hint is int:
        return _int_check(name, what)
    if hint is datetime:
        return _time_check(name)
    if isinstance(hint, type) and hasattr(hint, "_options"):  # nested Record
        return _record_check(hint, what)
    raise TypeError(f"no rule for {hint!r}")  # pragma: no cover - schema bug


def _list_check(name: str, hint: Any) -> Check:
    (item_hint,) = typing.get_args(hint)
    check_item = check_for(name, item_hint, item=True)

    def check_list(value: Any) -> list:
        if type(value) is not list:
            raise _wrong_type(name, "an array", value)
        if len(value) > MAX_LIST:
            raise Invalid("too_long", f"{name} has {len(value)} items > {MAX_LIST}")
        return [check_item(v) for v in value]
    return check_list


def _event_id_check(name: str) -> Check:
    def check_event_id(value: Any) -> str:
        if type(value) is not str:
            raise _wrong_type(name, "a string", value)
        canonical = canonical_event_id(value)
        if canonical is None:
            raise Invalid("bad_id", "event_id must be a UUID (see the accepted spellings)")
        return canonical
    return check_event_id


def _str_check(name: str, what: str, item: bool) -> Check:
    limit = MAX_STRING if item else MAX_LENGTHS.get(name, MAX_STRING)
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
            raise Invalid("too_long", f"{what} is {len(value)} chars > {limit}")
        if "\x00" in value:
            raise Invalid("bad_string", f"{what} contains NUL")
        if pattern is not None and not pattern.fullmatch(value):
            raise Invalid(code, f"{name} must match {pattern.pattern}")
        return value
    return check_str


def _int_check(name: str, what: str) -> Check:
    low, high = RANGES.get(name, (-MAX_INT, MAX_INT))

    def check_int(value: Any) -> int:
        if type(value) is not int:  # not bool, not float
            raise _wrong_type(what, "an integer", value)
        if not low <= value <= high:
            raise Invalid("out_of_range", f"{what} must be {low}..{high}")
        return value
    return check_int


def _time_check(name: str) -> Check:
    def check_time(value: Any) -> datetime:
        if type(value) is not str:
            raise _wrong_type(name, "an ISO-8601 string", value)
        if not _TIMESTAMP.fullmatch(value):
            raise Invalid("bad_timestamp", f"{name} must be YYYY-MM-DDThh:mm:ss[.ffffff] "
                                           f"with Z or a +hh:mm offset")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise Invalid("bad_timestamp", f"{name} is not a valid date and time") from None
        if not EARLIEST <= parsed <= datetime.now(timezone.utc) + MAX_FUTURE:
            raise Invalid("out_of_range", f"{name} must be from {EARLIEST:%Y-%m-%d} "
                                          f"to now + {MAX_FUTURE.days} day")
        return parsed
    return check_time


def _record_check(hint: type, what: str) -> Check:
    def check_record(value: Any) -> Any:
        if type(value) is not dict:
            raise _wrong_type(what, "an object", value)
        return build_record(hint, value)
    return check_record
