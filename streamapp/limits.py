"""Every limit of the event contract, defined once.

docs/events.md ("Limits") lists exactly these values, and the stores'
constraints (the SQL migrations) are no tighter: tests/contract checks both,
so an event the codec (``streamapp.codec``) accepts is never refused by a
store.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Dict, Tuple

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
