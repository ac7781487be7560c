"""No PII in the audit trail, whatever the input's shape; store errors reach
it by class and constraint only."""
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamapp import audit
from streamapp.stores.base import describe_error

EMAIL = "jane.doe.private@example.org"
NAME = "Jane Private Doe"

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False),
                      st.text(max_size=5))


def shapes(secret: str):
    """The secret as any JSON shape: string, inside lists and objects, nested."""
    return st.recursive(
        st.sampled_from([secret, f"x {secret} y"]),
        lambda inner: st.one_of(st.lists(st.one_of(inner, json_leaf), min_size=1, max_size=3),
                                st.dictionaries(st.text(max_size=5), inner, min_size=1,
                                                max_size=3)),
        max_leaves=6)


personal_keys = st.sampled_from(["email", "Email", "EMAIL", "e-mail", "display_name",
                                 "displayName", "Display-Name", "DISPLAY_NAME"])


@settings(max_examples=300, deadline=None)
@given(personal_keys, shapes(EMAIL), st.integers(0, 3), st.sampled_from([None, "allow"]))
def test_a_personal_field_is_masked_whatever_it_holds(key, value, depth, allow):
    doc = {key: value}
    for _ in range(depth):
        doc = {"payload": [doc], "user_id": "u1"}
    masked = audit.mask(doc, allowed=None if allow is None else frozenset(
        {"payload", "user_id", key}))
    assert EMAIL not in orjson.dumps(masked).decode()
    assert "jane" not in orjson.dumps(masked).decode().lower()


@settings(max_examples=200, deadline=None)
@given(shapes(EMAIL))
def test_an_address_anywhere_else_is_masked_too(value):
    masked = audit.mask({"reason": value, "genres": [value], "weird": {"nested": value}})
    assert EMAIL not in orjson.dumps(masked).decode()


@pytest.mark.parametrize("value", [7, 1990, 12.5, True, [NAME], {"first": NAME},
                                   [[{"x": NAME}]]])
def test_a_display_name_that_is_not_a_string_is_masked_whole(value):
    assert audit.mask({"display_name": value}) == {"display_name": "***"}


def test_a_display_name_string_keeps_only_its_first_character():
    assert audit.mask({"display_name": NAME}) == {"display_name": "J***"}


def test_dead_letter_previews_keep_only_the_contracts_field_names():
    raw = orjson.dumps({"type": "user.registered", "event_id": "x", "phone": "+44 20 7946 0000",
                        EMAIL: 1, "email": [EMAIL], "display_name": {"n": NAME},
                        "cast": [{"name": "A", "home_address": "1 Private Lane"}]})
    doc = audit.deadletter_doc(raw, {"x-reason": "wrong_type", "x-detail": "email must be a "
                                     "string, not array", "x-source-topic": "p.users",
                                     "x-source-partition": "0", "x-source-offset": "1"})
    text = orjson.dumps(doc, default=str).decode()
    for secret in (EMAIL, NAME, "Private Lane", "7946"):
        assert secret not in text, secret
    assert doc["payload"]["fields"]["cast"] == [{"name": "A"}]
    assert doc["event_type"] == "user.registered" and doc["event_id"] is None


def test_a_dead_letter_refused_by_a_store_names_its_event():
    wire = {"type": "rating.submitted", "event_id": "E21B37CA-1B29-4C99-86C8-0E2BC8C614B2",
            "occurred_at": "2026-01-01T00:00:00Z", "user_id": "u1", "movie_id": "m1",
            "score": 5}
    doc = audit.deadletter_doc(orjson.dumps(wire), {"x-reason": "store_refused",
                                                    "x-detail": "CheckViolationError"})
    assert (doc["event_type"], doc["event_id"]) == (
        "rating.submitted", "e21b37ca-1b29-4c99-86c8-0e2bc8c614b2")


def test_old_details_with_row_data_are_cut_before_indexing():
    detail = ('CheckViolationError: new row for relation "users" violates check constraint '
              f'"users_display_name_check"\nDETAIL:  Failing row contains (u1, {EMAIL}, ...)')
    assert EMAIL not in audit.scrub_detail(detail)
    assert "users_display_name_check" in audit.scrub_detail(detail)
    body = orjson.dumps({"status": "retried", "stream": "users", "store": "postgres",
                         "at": "2026-01-01T00:00:00+00:00", "reason": "X", "detail": detail,
                         "events": [["e1", "2026-01-01T00:00:00+00:00", "user.registered"]]})
    (doc,) = audit.outcome_docs(body)
    assert EMAIL not in doc["detail"]


def test_postgres_errors_are_described_without_the_row():
    import asyncpg

    exc = asyncpg.exceptions.PostgresError.new({
        "C": "23514", "M": 'new row for relation "users" violates check constraint '
                           '"users_display_name_check"',
        "D": f"Failing row contains (u1, {EMAIL}, {NAME}).", "n": "users_display_name_check",
        "t": "users", "s": "public"})
    assert EMAIL in str(exc)  # what the old code sent on
    described = describe_error(exc)
    assert EMAIL not in described and NAME not in described
    assert described == ("CheckViolationError: sqlstate=23514, schema_name=public, "
                         "table_name=users, constraint_name=users_display_name_check")


def test_mongo_errors_are_described_by_code_only():
    from pymongo.errors import BulkWriteError

    exc = BulkWriteError({"writeErrors": [{"index": 0, "code": 11000, "errmsg":
                                           f"E11000 duplicate key error dup key: {{ _id: \"{EMAIL}\" }}"}]})
    assert describe_error(exc) == "BulkWriteError: code=11000"


def test_connection_errors_keep_their_errno():
    assert describe_error(ConnectionRefusedError(111, "Connect call failed")) == \
        "ConnectionRefusedError: [Errno 111] Connect call failed"
