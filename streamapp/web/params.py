"""Query and path parameters of the read API: each checked against a fixed
pattern or set before anything else happens; a bad one is a ``BadRequest``
(400).  See ``views`` for the limits on a whole query string."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import FrozenSet, Iterable, Mapping, Optional

#: User, title and other ids in paths and query strings.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")

#: Query strings: at most this long, this many parameters, values at most
#: this long.  The longest legitimate value is an ISO time (about 32
#: characters) and the longest legitimate query string about 200.
MAX_QUERY_LENGTH = 2048
MAX_PARAMS = 16
MAX_VALUE_LENGTH = 256


class BadRequest(Exception):
    """A parameter failed validation (400)."""


def valid_id(value: Optional[str], what: str) -> str:
    # fullmatch: ``$`` alone would accept a trailing newline
    if value is None or not ID_PATTERN.fullmatch(value):
        raise BadRequest(f"invalid {what}: expected 1-64 characters of "
                         f"letters, digits and _.:- starting with a letter or digit")
    return value


def choice(query: Mapping[str, str], name: str, allowed: Iterable[str],
           default: Optional[str] = None) -> Optional[str]:
    value = query.get(name)
    if value is None or value == "":
        return default
    allowed = sorted(allowed)
    if value not in allowed:
        raise BadRequest(f"invalid {name}: expected one of {', '.join(allowed)}")
    return value


def int_in(query: Mapping[str, str], name: str, low: int, high: int, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,6}", raw) or not low <= int(raw) <= high:
        raise BadRequest(f"invalid {name}: expected an integer from {low} to {high}")
    return int(raw)


def iso_time(query: Mapping[str, str], name: str) -> Optional[datetime]:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        when = datetime.fromisoformat(raw)
        # in UTC, so that the audit store gets a time it can parse
        return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)
                ).astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise BadRequest(f"invalid {name}: expected an ISO-8601 date or time") from None


def check_query(raw: str, query: Mapping[str, str], allowed: Optional[FrozenSet[str]]) -> None:
    """Refuse query strings no client of ours sends (see the module docstring)."""
    if len(raw) > MAX_QUERY_LENGTH:
        raise BadRequest(f"query string too long (at most {MAX_QUERY_LENGTH} characters)")
    items = list(query.items())  # not keys(): a multidict lists a repeated key once
    if len(items) > MAX_PARAMS:
        raise BadRequest(f"too many query parameters (at most {MAX_PARAMS})")
    if len({key for key, _ in items}) != len(items):
        raise BadRequest("repeated query parameter")
    for key, value in items:
        if allowed is not None and key not in allowed:
            raise BadRequest("unknown query parameter"
                             + (f": expected {', '.join(sorted(allowed))}" if allowed
                                else ": this view takes none"))
        if len(value) > MAX_VALUE_LENGTH:
            raise BadRequest(f"query parameter too long (at most {MAX_VALUE_LENGTH} characters)")


def optional_id(query: Mapping[str, str], name: str) -> Optional[str]:
    raw = query.get(name)
    return None if raw is None or raw == "" else valid_id(raw, name)
