"""What S3 sends to the audit store: masked, with ids that make replays harmless."""
import json
from datetime import datetime, timezone

import pytest

from streamapp import records as r
from streamapp.audit import deadletter_doc, docs_for, email_hash, event_doc, outcome_docs

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_user_documents_carry_a_hash_not_the_email():
    event = r.UserRegistered(event_id="00000000-0000-4000-8000-000000000001", occurred_at=NOW,
                             user_id="u1", email="Ana.Silva@example.com", display_name="Ana Silva",
                             country="BR", birth_year=1990)
    doc = event_doc(event, "users")
    blob = json.dumps(doc, default=str)
    assert "Ana.Silva@example.com" not in blob and "Ana Silva" not in blob
    assert doc["email_hash"] == email_hash("ana.silva@example.com")
    assert doc["_id"] == event.event_id


def test_payment_documents_hold_no_card_data():
    event = r.PaymentProcessed(event_id="00000000-0000-4000-8000-000000000002", occurred_at=NOW,
                               payment_id="p1", user_id="u1", subscription_id="s1",
                               amount_cents=799, currency="USD", card_token="tok_secretsecret",
                               card_last4="4242")
    blob = json.dumps(event_doc(event, "payments"), default=str)
    assert "tok_secretsecret" not in blob and "4242" not in blob
    assert "799" in blob


def test_dead_letters_are_described_without_their_raw_bytes():
    raw = b'{"type": "user.registered", "email": "x@example.com", "card": "4111111111111111"'
    doc = deadletter_doc(raw, {"x-reason": "malformed_json", "x-source-topic": "p.users",
                               "x-source-partition": "0", "x-source-offset": "7"})
    blob = json.dumps(doc, default=str)
    assert "x@example.com" not in blob and "4111111111111111" not in blob
    assert doc["_id"] == "dl:p.users:0:7" and doc["reason"] == "malformed_json"


def test_outcome_documents_are_keyed_by_event_store_and_status():
    body = json.dumps({"status": "stored", "stream": "ratings", "store": "postgres",
                       "at": NOW.isoformat(),
                       "events": [["e1", NOW.isoformat(), "rating.submitted"]]}).encode()
    (doc,) = outcome_docs(body)
    assert doc["_id"] == "e1:postgres:stored"


def test_bulk_failures_split_busy_from_refused():
    from streamapp.stores.audit import failures

    reply = {"errors": True, "items": [
        {"index": {"status": 201}},
        {"index": {"status": 429, "error": {"type": "rejected_execution_exception"}}},
        {"index": {"status": 400, "error": {"type": "strict_dynamic_mapping_exception"}}},
        {"index": {"status": 503, "error": {"type": "unavailable_shards_exception"}}},
    ]}
    busy, refused = failures(reply)
    assert [r["status"] for r in busy] == [429, 503]
    assert [r["status"] for r in refused] == [400]
    assert failures({"errors": False, "items": [{"index": {"status": 201}}]}) == ([], [])


def test_the_bulk_body_is_one_action_and_one_source_line_per_document():
    from streamapp.stores.audit import AuditStore

    docs = [{"_id": f"e{i}:redis:stored", "doc_kind": "outcome", "occurred_at": NOW,
             "detail": "line one\nline two"} for i in range(3)]
    body = AuditStore("http://unused", "audit")._bulk_body(docs)
    assert body.endswith(b"\n")
    lines = [json.loads(line) for line in body.splitlines()]
    assert lines[0::2] == [{"index": {"_index": "audit-2026.01.01", "_id": f"e{i}:redis:stored"}}
                           for i in range(3)]
    assert lines[1] == {"doc_kind": "outcome", "occurred_at": "2026-01-01T00:00:00+00:00",
                        "detail": "line one\nline two"}


@pytest.mark.parametrize("value", [None, b"", b"not json", b"[1, 2]", b'{"events": []}'])
def test_a_record_that_is_no_outcome_gives_no_documents(value):
    # Before: orjson.loads(None) raised TypeError in S3's loop, which ended S3.
    assert docs_for("streamapp.outcomes", value, ()) == []
