"""The decoder against the contract's own rules (docs/events.md), with events
generated from those rules (``generate``), never from the simulator."""
import copy
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamapp import codec
from streamapp.codec import Rejection, decode

from .generate import EXAMPLES, SPELLINGS, any_event, example, spelled, stamp

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _ok(wire: dict):
    result = decode(orjson.dumps(wire))
    assert not isinstance(result, Rejection), (result, wire)
    return result


def _refused(wire: dict) -> Rejection:
    result = decode(orjson.dumps(wire))
    assert isinstance(result, Rejection), wire
    return result


@SETTINGS
@given(any_event)
def test_every_valid_event_decodes_to_exactly_its_values(wire):
    event = _ok(wire)
    assert event.TYPE == wire["type"]
    assert event.event_id == str(uuid.UUID(wire["event_id"].removeprefix("urn:uuid:")))
    assert event.occurred_at == datetime.fromisoformat(wire["occurred_at"])
    for name, value in wire.items():
        if name in ("type", "schema_version", "event_id", "occurred_at"):
            continue
        got = getattr(event, name)
        if name in ("cast", "artwork"):
            got = [item.asdict() for item in got]
        assert got == value and type(got) is type(value), name
    # and the canonical form reads back as itself
    again = _ok(orjson.loads(codec.encode(event)))
    assert again.event_id == event.event_id and again.occurred_at == event.occurred_at


# --- types are exactly what the contract says ----------------------------------

WRONG = {
    int: [1.0, True, False, "1", [1], {"n": 1}, 1.5],
    str: [1, 0.5, True, ["x"], {"x": "y"}],
    list: ["x", 1, True, {"x": 1}],
    dict: ["x", 1, True, ["x"]],
}


def _kind(value):
    for kind in (bool, int, str, list, dict):
        if type(value) is kind:
            return int if kind is bool else kind
    raise AssertionError(value)


@SETTINGS
@given(any_event, st.data())
def test_a_field_of_any_other_json_type_is_wrong_type(wire, data):
    fields = [k for k, v in wire.items() if k != "type" and v is not None]
    name = data.draw(st.sampled_from(fields))
    bad = data.draw(st.sampled_from(WRONG[_kind(wire[name])]))
    broken = dict(wire, **{name: bad})
    why = _refused(broken)
    assert why.code == "wrong_type", (name, bad, why)
    assert name in why.detail
    assert why.event_type == wire["type"]


@pytest.mark.parametrize("bad", [1.0, True, "1", [1], {"v": 1}])
def test_schema_version_is_a_json_integer(bad):
    wire = example("rating.submitted")
    why = _refused(dict(wire, schema_version=bad))
    assert (why.code, why.event_type) == ("wrong_type", "rating.submitted")
    assert why.event_id == str(uuid.UUID(wire["event_id"].removeprefix("urn:uuid:")))


@pytest.mark.parametrize("version", [0, 2, -1, 2**40])
def test_other_schema_versions_are_unsupported(version):
    assert _refused(dict(example("rating.submitted"),
                         schema_version=version)).code == "unsupported_version"


@pytest.mark.parametrize("nested", ["cast", "artwork"])
@pytest.mark.parametrize("bad", ["x", 1, True, ["x"]])
def test_items_of_object_lists_must_be_objects(nested, bad):
    wire = dict(example("title.upserted"), **{nested: [bad]})
    why = _refused(wire)
    assert why.code == "wrong_type" and nested in why.detail


@pytest.mark.parametrize("field,bad", [("width", 1.0), ("width", True), ("height", "5"),
                                       ("url", 7), ("kind", None), ("dominant_color", [])])
def test_fields_of_nested_objects_are_strict_too(field, bad):
    art = {"kind": "poster", "url": "u", "width": 5, "height": 5, "dominant_color": "#fff"}
    art[field] = bad
    why = _refused(dict(example("title.upserted"), artwork=[art]))
    assert why.code == ("missing_field" if bad is None else "wrong_type"), why


# --- every limit at the boundary and one past it -------------------------------

def test_the_page_has_an_example_of_every_event_type():
    assert set(EXAMPLES) == set(codec.EVENT_TYPES)
    for wire in EXAMPLES.values():
        _ok(wire)


def _string_fields():
    for kind in EXAMPLES:
        wire = example(kind)
        for name, value in wire.items():
            if type(value) is str and name not in ("type", "event_id", "occurred_at", "plan") \
                    and name not in codec.PATTERNS and name not in codec.ID_FIELDS:
                yield kind, name


@pytest.mark.parametrize("kind,name", sorted(set(_string_fields())))
@pytest.mark.parametrize("char", ["a", "😀", "\u0301"])
def test_string_lengths_at_the_limit_and_one_past(kind, name, char):
    limit = codec.MAX_LENGTHS.get(name, codec.MAX_STRING)
    wire = example(kind)
    assert getattr(_ok(dict(wire, **{name: char * limit})), name) == char * limit
    why = _refused(dict(wire, **{name: char * (limit + 1)}))
    assert (why.code, why.detail) == ("too_long", f"{name} is {limit + 1} chars > {limit}")


@pytest.mark.parametrize("name", ["genres", "directors", "similar"])
def test_list_items_are_strings_within_the_string_limit(name):
    wire = example("title.upserted")
    assert _ok(dict(wire, **{name: ["a" * codec.MAX_STRING]}))
    assert _refused(dict(wire, **{name: ["a" * (codec.MAX_STRING + 1)]})).code == "too_long"


@pytest.mark.parametrize("name", ["genres", "directors", "similar", "cast", "artwork"])
def test_list_sizes_at_the_limit_and_one_past(name):
    wire = example("title.upserted")
    item = {"cast": {"name": "n", "role": "r"},
            "artwork": {"kind": "k", "url": "u", "width": 1, "height": 1,
                        "dominant_color": "c"}}.get(name, "m1")
    assert len(getattr(_ok(dict(wire, **{name: [item] * codec.MAX_LIST})), name)) == codec.MAX_LIST
    why = _refused(dict(wire, **{name: [item] * (codec.MAX_LIST + 1)}))
    assert (why.code, why.detail) == ("too_long", f"{name} has {codec.MAX_LIST + 1} items > "
                                                  f"{codec.MAX_LIST}")


def _owner(name):
    for kind in EXAMPLES:
        wire = example(kind)
        if name in wire:
            return wire, None
        for nested in ("artwork",):
            if nested in wire and name in ("width", "height"):
                return wire, nested
    raise AssertionError(name)


@pytest.mark.parametrize("name", sorted(codec.RANGES))
def test_integer_ranges_at_the_limits_and_one_past(name):
    low, high = codec.RANGES[name]
    wire, nested = _owner(name)

    def with_value(v):
        if nested is None:
            return dict(wire, **{name: v})
        art = {"kind": "k", "url": "u", "width": 1, "height": 1, "dominant_color": "c", name: v}
        return dict(wire, **{nested: [art]})
    for v in (low, high):
        _ok(with_value(v))
    for v in (low - 1, high + 1):
        why = _refused(with_value(v))
        assert (why.code, why.detail) == ("out_of_range", f"{name} must be {low}..{high}")


def test_the_payload_limit_is_64_kib():
    wire = example("title.removed")
    wire["reason"] = "r"
    base = len(orjson.dumps(wire))
    wire["padding"] = "p" * (codec.MAX_PAYLOAD_BYTES - base - len(b',"padding":""'))
    assert len(orjson.dumps(wire)) == codec.MAX_PAYLOAD_BYTES
    _ok(wire)
    wire["padding"] += "p"
    assert _refused(wire).code == "too_large"


@pytest.mark.parametrize("name", [*codec.ID_FIELDS, *codec.PATTERNS])
@pytest.mark.parametrize("suffix", ["\n", " ", "\r\n", "\x0b"])
def test_formats_match_the_whole_value(name, suffix):
    """A trailing newline passed ``re.match(...$)`` and then broke a char(n)
    column or a CHECK: the whole value must match."""
    for kind in EXAMPLES:
        wire = example(kind)
        if wire.get(name) is not None:
            break
    else:
        pytest.skip(f"no event with {name}")
    why = _refused(dict(wire, **{name: wire[name] + suffix}))
    assert why.code == ("bad_id" if name in codec.ID_FIELDS else "bad_value"), why


def test_ids_at_64_characters_and_one_past():
    wire = example("rating.submitted")
    assert _ok(dict(wire, movie_id="m" * 64)).movie_id == "m" * 64
    assert _refused(dict(wire, movie_id="m" * 65)).code == "bad_id"


@pytest.mark.parametrize("how", SPELLINGS)
def test_every_event_id_spelling_is_one_canonical_id(how):
    value = uuid.uuid4()
    wire = dict(example("rating.submitted"), event_id=spelled(value, how))
    assert _ok(wire).event_id == str(value)


@pytest.mark.parametrize("bad", ["1234567_234567812345678123456781", "+2345678123456781234567812345678",
                                 " 12345678123456781234567812345678",
                                 "12345678-1234-5678-1234-56781234567", "1-2345678123456781234567812345678",
                                 "{12345678123456781234567812345678}", "not-a-uuid", ""])
def test_other_event_id_spellings_are_bad_ids(bad):
    why = _refused(dict(example("rating.submitted"), event_id=bad))
    assert why.code == "bad_id" and why.event_id is None


def test_timestamps_at_both_ends_and_one_past():
    wire = example("rating.submitted")
    now = datetime.now(timezone.utc)
    _ok(dict(wire, occurred_at="2000-01-01T00:00:00Z"))
    _ok(dict(wire, occurred_at="1999-12-31T23:00:00-01:00"))  # the same instant
    assert _refused(dict(wire, occurred_at="1999-12-31T23:59:59.999999Z")).code == "out_of_range"
    _ok(dict(wire, occurred_at=stamp(now + timedelta(days=1, minutes=-1), 0, 0, True)))
    assert _refused(dict(wire, occurred_at=stamp(now + timedelta(days=1, minutes=1), 0, 0,
                                                 True))).code == "out_of_range"


@pytest.mark.parametrize("bad", ["2026-01-01", "2026-01-01T00:00:00", "2026-01-01 00:00:00Z",
                                 "20260101T000000Z", "2026-W01-1T00:00:00Z", "2026-01-01T00Z",
                                 "2026-01-01T00:00:00.1234567Z", "2026-01-01T00:00:00+0000",
                                 "2026-01-01T00:00:00z", "2026-02-30T00:00:00Z",
                                 "2026-01-01T24:00:00Z", "2026-01-01T00:00:60Z"])
def test_timestamps_are_one_iso_8601_form(bad):
    assert _refused(dict(example("rating.submitted"),
                         occurred_at=bad)).code == "bad_timestamp"


@settings(max_examples=200, deadline=None)
@given(any_event, st.data())
def test_details_never_repeat_a_value_of_the_payload(wire, data):
    """Details go to dead-letter headers, outcomes and the audit trail."""
    marker = "Secret.Person@example.com"
    name = data.draw(st.sampled_from(sorted(k for k in wire if k != "type")))
    broken = copy.deepcopy(wire)
    broken[name] = data.draw(st.sampled_from([marker, [marker], {"x": marker}, marker * 2000]))
    result = decode(orjson.dumps(broken))
    if isinstance(result, Rejection):
        assert "Secret" not in result.detail, result
    unknown = _refused(dict(wire, type=marker))
    assert unknown.code == "unknown_type" and "Secret" not in unknown.detail
