"""The audit explorer's query structures, the masking of what it serves, and
the dashboard's series rates (sampling against the real Redis:
tests/integration/test_series_sampling.py)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from streamapp.series import rates, windows
from streamapp.stores import audit_query
from streamapp.stores.audit_query import Filters

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def test_user_text_only_reaches_simple_query_string():
    text = 'x" } ], "script": {"source": "1"} AND user_id:*'
    body = audit_query.search_body(Filters(since=T0, until=T0 + timedelta(minutes=5), text=text,
                                           user_id="u1"), offset=0, size=10, interval="1m")
    sqs = body["query"]["bool"]["must"][0]["simple_query_string"]
    assert sqs["query"] == text
    assert sqs["fields"] == list(audit_query.TEXT_FIELDS)
    assert "FUZZY" not in sqs["flags"] and "NEAR" not in sqs["flags"] and "SLOP" not in sqs["flags"]
    # nowhere else: the rest of the body is the same without it
    serialized = json.dumps(body)
    assert serialized.count("script") == 1
    assert {"term": {"user_id": "u1"}} in body["query"]["bool"]["filter"]


def test_free_text_is_cut_to_its_limit():
    body = audit_query.query(Filters(since=T0, until=T0 + timedelta(hours=1), text="y" * 500))
    assert len(body["bool"]["must"][0]["simple_query_string"]["query"]) == audit_query.MAX_TEXT


def test_no_text_no_must_and_range_always_there():
    body = audit_query.query(Filters(since=T0, until=T0 + timedelta(hours=1)))
    assert "must" not in body["bool"]
    assert body["bool"]["filter"] == [{"range": {"occurred_at": {
        "format": "epoch_millis", "gte": int(T0.timestamp() * 1000),
        "lte": int((T0 + timedelta(hours=1)).timestamp() * 1000)}}}]


def test_histogram_spans_the_range_by_type():
    f = Filters(since=T0, until=T0 + timedelta(minutes=30))
    agg = audit_query.search_body(f, 0, 20, "1m")["aggs"]["histogram"]
    assert agg["date_histogram"]["fixed_interval"] == "1m"
    assert agg["date_histogram"]["min_doc_count"] == 0
    assert agg["date_histogram"]["extended_bounds"] == {
        "min": int(T0.timestamp() * 1000), "max": int((T0 + timedelta(minutes=30)).timestamp() * 1000)}
    assert agg["aggs"]["types"]["terms"]["field"] == "event_type"


@pytest.mark.parametrize("span,interval", [
    (timedelta(minutes=15), "1m"), (timedelta(hours=6) - timedelta(minutes=1), "1m"),
    (timedelta(hours=6), "5m"),
    (timedelta(days=1), "5m"), (timedelta(days=7), "30m"), (timedelta(days=31), "3h")])
def test_auto_interval_keeps_buckets_bounded(span, interval):
    assert audit_query.auto_interval(T0, T0 + span) == interval
    assert audit_query.bucket_count(T0, T0 + span, interval) <= audit_query.MAX_BUCKETS


@hsettings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=86400 * 1000), st.integers(min_value=1, max_value=31 * 86400))
def test_auto_interval_never_exceeds_the_bucket_limit(start_ms, seconds):
    since = T0 + timedelta(milliseconds=start_ms)
    until = since + timedelta(seconds=seconds)
    interval = audit_query.auto_interval(since, until)
    assert audit_query.bucket_count(since, until, interval) <= audit_query.MAX_BUCKETS


def test_histogram_reply_is_read_as_buckets():
    reply = {"aggregations": {"histogram": {"buckets": [
        {"key": 1000, "doc_count": 3, "types": {"buckets": [
            {"key": "a.b", "doc_count": 2}, {"key": "(none)", "doc_count": 1}]}},
        {"key": 61000, "doc_count": 0, "types": {"buckets": []}}]}}}
    assert audit_query.histogram(reply) == {
        "buckets": [{"start": 1000, "total": 3, "types": {"a.b": 2, "(none)": 1}},
                    {"start": 61000, "total": 0, "types": {}}],
        "types": ["(none)", "a.b"]}


def test_served_documents_are_masked_again():
    from streamapp.web.audit_views import masked

    event = {"doc_kind": "event", "event_id": "e1", "detail": None,
             "payload": {"email": "jane@example.org", "display_name": "Jane Doe",
                         "note": "write to jane@example.org", "card_number": "4111111111111111"}}
    out = masked(event)
    assert out["payload"] == {"email": "***", "display_name": "J***", "note": "write to ***"}
    assert masked(out) == out  # idempotent: what was masked when indexed stays as it is
    dead = {"doc_kind": "deadletter", "detail": "bad row: Failing row contains (jane@x.org)",
            "payload": {"bytes": 10, "sha256": "4111111111111111" + "0" * 48,
                        "fields": {"email": "jane@example.org"}}}
    out = masked(dead)
    assert out["payload"]["sha256"] == dead["payload"]["sha256"]  # a digest, left alone
    assert out["payload"]["fields"] == {"email": "***"}
    assert "jane" not in out["detail"]


def test_rates_from_consecutive_samples():
    samples = [{"at": 0.0, "consumed": {"ratings": 100}},
               {"at": 5.0, "consumed": {"ratings": 150}},
               {"at": 10.0, "consumed": {"ratings": 150}},
               {"at": 20.0, "consumed": {"ratings": 10}}]  # a recreated topic
    out = rates(samples)
    assert out["ratings"] == [None, 10.0, 0.0, None]
    assert out["users"] == [None, 0.0, 0.0, 0.0]
    assert rates([])["ratings"] == []


def test_window_bars_keep_each_windows_latest_count():
    samples = [{"windows": {"60": 5, "120": 1}}, {"windows": {"120": 7, "180": 0}},
               {"windows": {"120": 9, "180": 2}}]
    assert windows(samples, since=100) == {"start": [120, 180], "ratings": [9, 2]}
    assert windows([], since=0) == {"start": [], "ratings": []}


def test_the_time_range_is_exact_to_the_millisecond():
    """ISO bounds let OpenSearch fill what a time leaves out upwards for
    ``lte`` (until=11:49:00 took in 11:49:00.999); milliseconds cannot."""
    since = datetime(2026, 12, 1, 11, 47, tzinfo=timezone.utc)
    until = datetime(2026, 12, 1, 11, 49, tzinfo=timezone.utc)
    span = audit_query.time_range(since, until)
    assert span == {"format": "epoch_millis", "gte": 1796125620000, "lte": 1796125740000}
    q = audit_query.query(Filters(since=since, until=until))
    assert {"range": {"occurred_at": span}} in q["bool"]["filter"]
