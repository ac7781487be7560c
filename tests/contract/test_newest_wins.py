""""Newest wins" as pure functions: the newest ``occurred_at`` wins, on equal
times the greater ``event_id`` (canonical lower-case string), whatever the
order.  The stores apply the same rank (``codec.version``) against what they
hold; tests/integration/test_contract_newest.py checks that end to end."""
import itertools
import uuid
from datetime import datetime, timedelta, timezone

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp.codec import decode, version
from streamapp.stores.postgres_accounts import _newest_per, _profiles

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def pref(event_id: str, at: str, value: str, key: str = "autoplay"):
    return decode(orjson.dumps({"type": "preference.set", "event_id": event_id,
                                "occurred_at": at, "user_id": "u1", "key": key,
                                "value": value}))


def test_equal_times_in_other_offsets_are_equal_and_the_greater_id_wins():
    low = pref("00000000-0000-4000-8000-00000000000a", "2026-03-01T12:00:00+02:00", "low")
    # the same instant, and an id that is greater only in canonical lower case
    high = pref("{00000000-0000-4000-8000-00000000000B}", "2026-03-01T10:00:00Z", "high")
    assert low.occurred_at == high.occurred_at
    for order in ([low, high], [high, low]):
        ((_, winner),) = _newest_per(order, "user_id", "key")
        assert winner.value == "high"


def test_microseconds_count():
    a = pref(str(uuid.uuid4()), "2026-03-01T10:00:00.000001Z", "later")
    b = pref("ffffffff-ffff-4fff-bfff-ffffffffffff", "2026-03-01T10:00:00Z", "earlier")
    assert version(a) > version(b)


events = st.lists(st.tuples(st.integers(0, 3), st.uuids(), st.sampled_from(["a", "b"]),
                            st.sampled_from(["autoplay", "subtitles"])),
                  min_size=1, max_size=6, unique_by=lambda t: t[1])


@settings(max_examples=200, deadline=None)
@given(events)
def test_the_newest_per_key_does_not_depend_on_order(rows):
    made = [pref(str(eid), (T0 + timedelta(seconds=s)).isoformat(), value, key)
            for s, eid, value, key in rows]
    expected = {}
    for e in made:
        rank = (e.occurred_at, e.event_id)
        if e.key not in expected or rank > expected[e.key][0]:
            expected[e.key] = (rank, e.event_id)
    for order in itertools.islice(itertools.permutations(made), 24):
        got = {e.key: e.event_id for _, e in _newest_per(order, "user_id", "key")}
        assert got == {k: eid for k, (_, eid) in expected.items()}


def _update(eid, seconds, **fields):
    return decode(orjson.dumps({"type": "user.updated", "event_id": str(eid),
                                "occurred_at": (T0 + timedelta(seconds=seconds)).isoformat(),
                                "user_id": "u1", **fields}))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.uuids(),
                          st.fixed_dictionaries({}, optional={
                              "display_name": st.sampled_from(["A", "B"]),
                              "country": st.sampled_from(["PT", "BR"])})),
                min_size=1, max_size=5, unique_by=lambda t: t[1]))
def test_each_profile_field_takes_its_newest_value_in_any_order(rows):
    made = [_update(eid, s, **fields) for s, eid, fields in rows]
    results = {tuple(_profiles(order)[0][1:5]) for order in
               itertools.islice(itertools.permutations(made), 24)}
    assert len(results) == 1
