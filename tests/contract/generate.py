"""Contract-valid events, generated from the rules of docs/events.md.

Nothing here comes from the simulator: every strategy follows one rule of the
contract (the "Limits" table, which ``test_limits_agree`` holds equal to
``streamapp.codec``), and aims at its edges: all Unicode planes (astral,
right-to-left, combining marks), maximum lengths and counts, minimum and
maximum values, every ``event_id`` spelling the contract allows, the
earliest and the latest allowed times with any offset.

The strategies build wire dicts (what a producer sends), never records.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Dict, Optional

from hypothesis import strategies as st

from streamapp import codec

#: Characters a JSON string of the contract may hold: any code point but NUL
#: and the surrogates (which UTF-8 cannot carry).
CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")

#: Strings that stress storage and display: astral planes, RTL, combining
#: marks, bidi controls, the last code point, JSON/SQL/Mongo-special text.
ODD = ("😀", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\U0010fffd", "\U000e0001", "مرحبا بالعالم", "שלום עולם",
       "e\u0301\u0302\u0303", "\u202edesrever\u202c", "\u200b\u200d\ufeff", "a\nb\tc\r",
       "O'Brien \"quoted\" \\ back", "$set", "{\"$gt\": \"\"}", "'); DROP TABLE users; --",
       "%s %d {0}", "   ", "")


def text(limit: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Any string of ``min_size``..``limit`` characters, edges likely."""
    fill = st.sampled_from(["a", "😀", "\u0301", "ش", "\U0010fffd", "漢"])
    return st.one_of(
        st.text(CHARS, min_size=min_size, max_size=min(limit, 30)),
        st.sampled_from([s for s in ODD if min_size <= len(s) <= limit]),
        st.builds(lambda ch: ch * limit, fill),            # exactly at the limit
        st.builds(lambda ch, s: (s + ch * limit)[:limit], fill, st.text(CHARS, max_size=5)),
    )


def matching(name: str) -> st.SearchStrategy[str]:
    """Values of a field with a format (``codec.PATTERNS``, the id pattern)."""
    pattern = codec.ID_PATTERN if name in codec.ID_FIELDS else codec.PATTERNS[name]
    return st.from_regex(pattern, fullmatch=True, alphabet=CHARS).filter(
        lambda s: len(s) <= codec.MAX_LENGTHS.get(name, codec.MAX_STRING))


def in_range(name: str) -> st.SearchStrategy[int]:
    low, high = codec.RANGES[name]
    return st.one_of(st.sampled_from([low, high]), st.integers(low, high))


def spelled(value: uuid.UUID, how: str) -> str:
    """One of the ``event_id`` spellings the contract accepts."""
    text_ = str(value)
    return {"canonical": text_, "upper": text_.upper(), "braces": "{" + text_ + "}",
            "urn": "urn:uuid:" + text_, "hex": value.hex,
            "mixed": "".join(c.upper() if i % 2 else c for i, c in enumerate(text_))}[how]


SPELLINGS = ("canonical", "upper", "braces", "urn", "hex", "mixed")
event_ids = st.builds(spelled, st.uuids(), st.sampled_from(SPELLINGS))


def stamp(at: datetime, offset_min: int, digits: int, zulu: bool) -> str:
    """``at`` as the contract's timestamp: ``digits`` fraction digits (``at``
    must have no finer precision), the offset, or ``Z``."""
    local = at.astimezone(timezone(timedelta(minutes=offset_min)))
    text_ = f"{local:%Y-%m-%dT%H:%M:%S}"
    if digits:
        text_ += "." + f"{local.microsecond:06d}"[:digits]
    if zulu and offset_min == 0:
        return text_ + "Z"
    sign = "-" if offset_min < 0 else "+"
    return text_ + f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"


@st.composite
def timestamps(draw, now: Optional[datetime] = None) -> str:
    """From ``codec.EARLIEST`` to now + ``MAX_FUTURE`` (less a margin for the
    time until the worker reads it), in any offset, 0 to 6 fraction digits."""
    now = now or datetime.now(timezone.utc)
    latest = now + codec.MAX_FUTURE - timedelta(minutes=10)
    at = draw(st.one_of(
        st.sampled_from([codec.EARLIEST, latest.replace(microsecond=0)]),
        st.datetimes(min_value=codec.EARLIEST.replace(tzinfo=None),
                     max_value=latest.replace(tzinfo=None)).map(
            lambda d: d.replace(tzinfo=timezone.utc))))
    digits = draw(st.integers(0, 6))
    at = at.replace(microsecond=at.microsecond // 10 ** (6 - digits) * 10 ** (6 - digits))
    offset = draw(st.one_of(st.just(0), st.sampled_from([-23 * 60 - 59, 23 * 60 + 59, 330, -570]),
                            st.integers(-23 * 60 - 59, 23 * 60 + 59)))
    return stamp(at, offset, digits, draw(st.booleans()))


def common(kind: str) -> Dict[str, st.SearchStrategy]:
    return {"type": st.just(kind), "event_id": event_ids, "occurred_at": timestamps(),
            "schema_version": st.sampled_from([1, None, "absent"])}


def _event(kind: str, **fields: st.SearchStrategy) -> st.SearchStrategy[dict]:
    def clean(d: dict) -> dict:
        return {k: v for k, v in d.items() if v != "absent"}
    return st.fixed_dictionaries({**common(kind), **fields}).map(clean)


def strings(name: str) -> st.SearchStrategy[str]:
    return text(codec.MAX_LENGTHS.get(name, codec.MAX_STRING))


def lists(items: st.SearchStrategy, big: bool = True) -> st.SearchStrategy[list]:
    """Lists up to ``MAX_LIST`` items (the full count only for small items:
    a record must fit in ``MAX_PAYLOAD_BYTES``)."""
    sizes = [st.lists(items, max_size=4)]
    if big:
        sizes.append(st.lists(st.just("x"), min_size=codec.MAX_LIST, max_size=codec.MAX_LIST))
    return st.one_of(*sizes)


def small(limit: int = 40) -> st.SearchStrategy[str]:
    return text(limit)


def artwork() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({"kind": small(), "url": small(), "width": in_range("width"),
                                  "height": in_range("height"), "dominant_color": small()})


EVENTS: Dict[str, st.SearchStrategy[dict]] = {
    "user.registered": _event("user.registered", user_id=matching("user_id"),
                              email=matching("email"), display_name=strings("display_name"),
                              country=matching("country"), birth_year=in_range("birth_year")),
    "user.updated": _event("user.updated", user_id=matching("user_id"),
                           display_name=st.one_of(st.none(), strings("display_name")),
                           country=st.one_of(st.none(), matching("country")),
                           email=st.one_of(st.none(), matching("email"))),
    "subscription.started": _event("subscription.started",
                                   subscription_id=matching("subscription_id"),
                                   user_id=matching("user_id"),
                                   plan=st.sampled_from(sorted(codec.PLANS)),
                                   price_cents=in_range("price_cents"),
                                   currency=matching("currency")),
    "subscription.changed": _event("subscription.changed",
                                   subscription_id=matching("subscription_id"),
                                   user_id=matching("user_id"),
                                   plan=st.sampled_from(sorted(codec.PLANS)),
                                   price_cents=in_range("price_cents"),
                                   currency=matching("currency")),
    "subscription.cancelled": _event("subscription.cancelled",
                                     subscription_id=matching("subscription_id"),
                                     user_id=matching("user_id"), reason=strings("reason")),
    "payment.processed": _event("payment.processed", payment_id=matching("payment_id"),
                                user_id=matching("user_id"),
                                subscription_id=matching("subscription_id"),
                                amount_cents=in_range("amount_cents"),
                                currency=matching("currency"),
                                card_token=matching("card_token").filter(
                                    lambda t: not codec.has_card_number(t)),
                                card_last4=matching("card_last4")),
    "payment.failed": _event("payment.failed", payment_id=matching("payment_id"),
                             user_id=matching("user_id"),
                             subscription_id=matching("subscription_id"),
                             amount_cents=in_range("amount_cents"),
                             currency=matching("currency"),
                             card_token=matching("card_token").filter(
                                 lambda t: not codec.has_card_number(t)),
                             card_last4=matching("card_last4"),
                             failure_reason=strings("failure_reason")),
    "preference.set": _event("preference.set", user_id=matching("user_id"),
                             key=matching("key"), value=strings("value")),
    "rating.submitted": _event("rating.submitted", user_id=matching("user_id"),
                               movie_id=matching("movie_id"), score=in_range("score")),
    "session.started": _event("session.started", session_id=matching("session_id"),
                              user_id=matching("user_id"), movie_id=matching("movie_id"),
                              device=strings("device")),
    "session.heartbeat": _event("session.heartbeat", session_id=matching("session_id"),
                                user_id=matching("user_id"), movie_id=matching("movie_id"),
                                position_s=in_range("position_s")),
    "session.ended": _event("session.ended", session_id=matching("session_id"),
                            user_id=matching("user_id"), movie_id=matching("movie_id"),
                            watched_s=in_range("watched_s")),
    "title.upserted": _event("title.upserted", movie_id=matching("movie_id"),
                             title=small(200), year=in_range("year"),
                             genres=lists(small()), directors=lists(small()),
                             similar=lists(matching("movie_id")),
                             cast=lists(st.fixed_dictionaries({"name": small(),
                                                               "role": small()}), big=False),
                             artwork=lists(artwork(), big=False),
                             synopsis=strings("synopsis"), runtime_min=in_range("runtime_min")),
    "title.removed": _event("title.removed", movie_id=matching("movie_id"),
                            reason=strings("reason")),
}

any_event = st.one_of(*EVENTS.values())


def doc_examples() -> Dict[str, dict]:
    """The example event of each type in docs/events.md, by type: the
    contract's own text, as a producer reading it would send it."""
    import json
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
    found = {}
    for block in re.findall(r"```json\n(.*?)```", page, re.S):
        try:
            wire = json.loads(block)
        except ValueError:
            continue  # the outcome examples are several objects
        if isinstance(wire, dict) and wire.get("type") in codec.EVENT_TYPES:
            found.setdefault(wire["type"], wire)
    return found


EXAMPLES = doc_examples()


def example(kind: str) -> dict:
    """A fresh copy of the page's example of ``kind``."""
    import copy
    return copy.deepcopy(EXAMPLES[kind])
