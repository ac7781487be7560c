"""Strict decoding: every good event round-trips, every bad one has a reason."""
from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp.codec import Rejection, decode, encode
from streamapp.records import EVENT_TYPES
from streamapp.simulator.world import World


def sample_events():
    world = World(seed=3, users=30, titles=15, epoch=datetime(2026, 1, 1, tzinfo=timezone.utc))
    seen = {}
    for _, _, value, _, _ in world.events(2000):
        body = orjson.loads(value)
        seen.setdefault(body["type"], value)
    return seen


SAMPLES = sample_events()


def test_the_simulator_emits_every_event_type():
    assert set(SAMPLES) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_event_type_round_trips(event_type):
    event = decode(SAMPLES[event_type])
    assert not isinstance(event, Rejection), event
    assert event.TYPE == event_type
    assert decode(encode(event)) == event


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_decoded_records_are_what_their_constructor_builds(event_type):
    """``decode`` skips the records' own ``__init__`` (it checks fields itself);
    the record must be the same as the constructor's, nested records too."""
    event = decode(SAMPLES[event_type])
    built = type(event)(**{name: getattr(event, name) for name in event._options.fields})
    assert [getattr(built, name) for name in built._options.fields] == \
        [getattr(event, name) for name in event._options.fields]
    assert vars(event) == vars(built)  # the same fields and bookkeeping, nothing more
    assert event.asdict() == built.asdict()
    assert event.dumps() == built.dumps()
    assert event.to_wire() == built.to_wire()


def test_event_ids_are_spelled_one_way():
    body = orjson.loads(SAMPLES["rating.submitted"])
    canonical = body["event_id"]
    for spelling in (canonical.upper(), "{" + canonical + "}", canonical.replace("-", "")):
        event = decode(orjson.dumps({**body, "event_id": spelling}))
        assert event.event_id == canonical


def _mutated(event_type, **changes):
    body = orjson.loads(SAMPLES[event_type])
    for key, value in changes.items():
        if value is KeyError:
            del body[key]
        else:
            body[key] = value
    return orjson.dumps(body)


@pytest.mark.parametrize("raw, code", [
    (b"{not json", "malformed_json"),
    (b'{"type": "rating.submitted", "x": "\xff"}', "malformed_json"),
    (b"[1, 2]", "not_an_object"),
    (None, "empty"),
    (b"x" * 70_000, "too_large"),
    (_mutated("rating.submitted", type="rating.deleted"), "unknown_type"),
    (_mutated("rating.submitted", score=11), "out_of_range"),
    (_mutated("rating.submitted", score="10"), "wrong_type"),
    (_mutated("rating.submitted", score=True), "wrong_type"),
    (_mutated("rating.submitted", user_id=KeyError), "missing_field"),
    (_mutated("rating.submitted", occurred_at="9999-12-31T00:00:00+00:00"), "out_of_range"),
    (_mutated("rating.submitted", occurred_at="2026-01-01T00:00:00"), "bad_timestamp"),
    (_mutated("rating.submitted", event_id="not-a-uuid"), "bad_id"),
    (_mutated("rating.submitted", movie_id="m1'; DROP TABLE ratings;--"), "bad_id"),
    (_mutated("rating.submitted", movie_id={"$gt": ""}), "wrong_type"),
    (_mutated("rating.submitted", schema_version=2), "unsupported_version"),
    (_mutated("payment.processed", amount_cents=-5), "out_of_range"),
    (_mutated("payment.processed", card_token="tok_4111111111111111"), "card_number"),
    (_mutated("payment.processed", card_last4="42"), "bad_value"),
    (_mutated("user.registered", email="not-an-email"), "bad_value"),
    (_mutated("title.upserted", synopsis="x" * 5000), "too_long"),
    (_mutated("subscription.started", plan="platinum"), "bad_value"),
])
def test_bad_input_is_rejected_with_a_reason(raw, code):
    result = decode(raw)
    assert isinstance(result, Rejection)
    assert result.code == code, result


def test_a_topic_accepts_only_its_own_types():
    result = decode(SAMPLES["rating.submitted"], frozenset({"user.registered"}))
    assert isinstance(result, Rejection) and result.code == "wrong_topic"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(raw):
    assert decode(raw) is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(EVENT_TYPES)), st.dictionaries(st.text(max_size=20), json_values, max_size=8))
def test_generated_garbage_fields_never_raise(event_type, fields):
    body = {**orjson.loads(SAMPLES[event_type]), **fields}
    result = decode(orjson.dumps(body))
    assert result is not None
