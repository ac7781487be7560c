"""The audit explorer's JSON views against a real worker (S3 inside it) and the
real OpenSearch: filters, paging, the histogram, masking, auth, bad input.

Every expected number is computed independently of the view: from the
simulator's summary, or from the documents themselves read straight from
OpenSearch and counted here.
"""
from __future__ import annotations

import asyncio
import re
import shutil
import socket
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from harness import Worker, api_headers, isolated_env, reset_stores, settings_for, simulate, stores_for, wait_until
from streamapp.connections import kafka_client_options

pytestmark = pytest.mark.integration

DB_NAME = "streamapp_test_audit_api"
REDIS_DB = 12
EMAIL = "victoria.private@example.org"
NAME = "Victoria Privatename"
USER_ID = "u7770001"
EVENT_ID = str(uuid.uuid4())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    def __init__(self, base: str, env: dict, http: aiohttp.ClientSession, stores) -> None:
        self.base, self.env, self.http, self.stores = base, env, http, stores

    async def get(self, path: str, auth: bool = True, headers: dict = None):
        sent = dict(api_headers(self.env) if auth else {}, **(headers or {}))
        async with self.http.get(self.base + path, headers=sent) as reply:
            text = await reply.text()
            return reply.status, (orjson.loads(text) if text.startswith("{") else text), text


async def produce_person(cfg) -> None:
    """One sign-up with known personal data, as docs/events.md describes it."""
    wire = {"type": "user.registered", "schema_version": 1, "event_id": EVENT_ID,
            "occurred_at": datetime.now(timezone.utc).isoformat(), "user_id": USER_ID,
            "email": EMAIL, "display_name": NAME, "country": "NR", "birth_year": 1955}
    producer = AIOKafkaProducer(**kafka_client_options(cfg), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(cfg.topic("users"), key=USER_ID.encode(),
                                     value=orjson.dumps(wire))
    finally:
        await producer.stop()


async def all_docs(stores) -> list:
    """Every audit document of the namespace, straight from OpenSearch (a
    scroll: a run's documents can outnumber one search's 10,000 hits)."""
    await stores.audit.refresh()
    client = stores.audit.client
    reply = await client.search(
        index=f"{stores.audit.prefix}-*", scroll="1m",
        body={"query": {"match_all": {}}, "size": 5_000,
              "_source": ["occurred_at", "event_type", "doc_kind", "user_id", "movie_id",
                          "status", "reason"]})
    docs = []
    try:
        while reply["hits"]["hits"]:
            docs += [dict(h["_source"], _id=h["_id"]) for h in reply["hits"]["hits"]]
            reply = await client.scroll(body={"scroll_id": reply["_scroll_id"], "scroll": "1m"})
    finally:
        await client.clear_scroll(body={"scroll_id": reply["_scroll_id"]})
    return docs


@pytest.fixture(scope="module")
async def audit_api(tmp_path_factory):
    env = isolated_env(database=DB_NAME, redis_db=REDIS_DB)
    await reset_stores(env)
    cfg = settings_for(env)
    stores = stores_for(env)
    port = free_port()
    tmp = tmp_path_factory.mktemp("audit-api")
    worker = Worker(env, tmp / "worker.log", port=port)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
    try:
        worker.start()
        await asyncio.to_thread(worker.wait_ready, 60)
        summary = await asyncio.to_thread(
            simulate, env, "--count", "2500", "--rate", "0", "--seed", "21", "--bad-share",
            "0.02", summary=tmp / "summary.json")
        await produce_person(cfg)

        async def indexed():
            await stores.audit.refresh()
            events = await stores.audit.count(doc_kind="event")
            stored = await stores.audit.count(doc_kind="outcome", event_id=EVENT_ID)
            return events >= summary["valid"] + 1 and stored >= 1
        assert await wait_until(indexed, timeout=120, interval=2), worker.tail()
        # The outcomes of the last batches follow their events: wait until the
        # index stops growing (on a busy machine they can take seconds).
        seen = {"total": -1}

        async def settled():
            await stores.audit.refresh()
            before, seen["total"] = seen["total"], await stores.audit.count()
            return seen["total"] == before
        assert await wait_until(settled, timeout=60, interval=3), worker.tail()
        docs = await all_docs(stores)
        yield Api(f"http://127.0.0.1:{port}", env, http, stores), summary, docs
    finally:
        await http.close()
        await stores.close()
        worker.stop()
        shutil.rmtree(env["STREAMAPP_DATA_DIR"], ignore_errors=True)


def span(docs) -> tuple:
    times = [datetime.fromisoformat(d["occurred_at"]) for d in docs]
    since = min(times).replace(second=0, microsecond=0) - timedelta(minutes=1)
    until = max(times).replace(second=0, microsecond=0) + timedelta(minutes=2)
    return since, until


def window(docs) -> str:
    since, until = span(docs)
    return (f"since={since.isoformat().replace('+00:00', 'Z')}"
            f"&until={until.isoformat().replace('+00:00', 'Z')}")


async def test_search_counts_and_histogram_match_the_index(audit_api):
    api, summary, docs = audit_api
    status, body, _ = await api.get(f"/api/audit/search/?{window(docs)}&size=5")
    assert status == 200, body
    assert body["total"] == len(docs) and body["total_relation"] == "eq"
    assert len(body["hits"]) == 5
    # newest first (the index keeps times to the millisecond)
    times = [h["occurred_at"][:23] for h in body["hits"]]
    assert times == sorted(times, reverse=True)

    # the histogram: per minute and type, counted here from the documents
    h = body["histogram"]
    assert h["interval"] == "1m" and h["interval_s"] == 60
    expected = Counter()
    for d in docs:
        at = datetime.fromisoformat(d["occurred_at"]).astimezone(timezone.utc)
        minute = int(at.replace(second=0, microsecond=0).timestamp() * 1000)
        expected[(minute, d.get("event_type") or "(none)")] += 1
    got = Counter({(b["start"], t): n for b in h["buckets"] for t, n in b["types"].items()})
    assert got == expected
    assert sum(b["total"] for b in h["buckets"]) == len(docs)
    # every minute of the range is there, empty ones included
    since, until = span(docs)
    starts = [b["start"] for b in h["buckets"]]
    assert starts == list(range(int(since.timestamp() * 1000), int(until.timestamp() * 1000) + 1,
                                60_000))
    assert any(b["total"] == 0 for b in h["buckets"]) and any(b["total"] for b in h["buckets"])
    assert set(h["types"]) >= {"rating.submitted", "user.registered", "session.started"}


async def test_field_filters(audit_api):
    api, summary, docs = audit_api
    w = window(docs)
    # event type and kind: the simulator says how many sign-ups it made (plus ours)
    status, body, _ = await api.get(f"/api/audit/search/?{w}&event_type=user.registered&kind=event")
    assert status == 200, body
    assert body["total"] == summary["per_type"]["user.registered"] + 1
    assert {(h["event_type"], h["doc_kind"]) for h in body["hits"]} == {("user.registered", "event")}

    # a user, a title: as many as OpenSearch holds for them
    user = next(d["user_id"] for d in docs if d.get("user_id") and d["user_id"] != USER_ID)
    status, body, _ = await api.get(f"/api/audit/search/?{w}&user_id={user}&size=100")
    assert body["total"] == sum(1 for d in docs if d.get("user_id") == user) > 0
    assert {h["user_id"] for h in body["hits"]} == {user}
    movie = Counter(d["movie_id"] for d in docs if d.get("movie_id")).most_common(1)[0][0]
    status, body, _ = await api.get(f"/api/audit/search/?{w}&movie_id={movie}&size=100")
    assert body["total"] == sum(1 for d in docs if d.get("movie_id") == movie) > 1
    assert {h["movie_id"] for h in body["hits"]} == {movie}

    # outcome status
    status, body, _ = await api.get(f"/api/audit/search/?{w}&kind=deadletter&status=rejected")
    assert body["total"] == sum(1 for d in docs if d["doc_kind"] == "deadletter")
    assert body["total"] == summary["expect"]["deadletter"] > 0

    # free text: a reason code (a keyword), and a phrase in the analysed detail
    reason = Counter(d["reason"] for d in docs if d.get("reason")).most_common(1)[0][0]
    status, body, _ = await api.get(f"/api/audit/search/?{w}&q={reason}&kind=deadletter")
    assert body["total"] == sum(1 for d in docs if d.get("reason") == reason
                                and d["doc_kind"] == "deadletter") > 0
    status, body, _ = await api.get(f"/api/audit/search/?{w}&q=u777000*")
    assert status == 200 and body["total"] >= 1
    assert {h["user_id"] for h in body["hits"]} == {USER_ID}
    # syntax that would break a query string is just text to simple_query_string
    for text in ('"unclosed', "a AND (b", "*:*", "user_id:u0000001", "\\", "(((("):
        status, body, _ = await api.get("/api/audit/search/?" + w + "&q="
                                        + aiohttp.helpers.quote(text, safe=""))
        assert status == 200, (text, body)

    # the time range narrows the histogram and the total
    since, until = span(docs)
    mid = (since + (until - since) / 2).replace(microsecond=0)
    ranged = (f"/api/audit/search/?since={since.isoformat().replace('+00:00', 'Z')}"
              f"&until={mid.isoformat().replace('+00:00', 'Z')}")
    # the index keeps milliseconds: compare at that precision
    millis = lambda t: int(t.timestamp() * 1000)  # noqa: E731
    # A late outcome can still land in the range: compare with the documents
    # read between two answers that agree.
    for _ in range(10):
        _, first, _ = await api.get(ranged)
        now_docs = await all_docs(api.stores)
        _, second, _ = await api.get(ranged)
        if first["total"] == second["total"]:
            break
        await asyncio.sleep(1)
    # until=11:49:00 means 11:49:00.000, not the whole second
    assert second["total"] == sum(
        1 for d in now_docs if millis(datetime.fromisoformat(d["occurred_at"])) <= millis(mid))


async def test_paging(audit_api):
    api, summary, docs = audit_api
    w = window(docs) + "&kind=event&event_type=rating.submitted"
    seen = []
    for page in (1, 2, 3):
        status, body, _ = await api.get(f"/api/audit/search/?{w}&page={page}&size=7")
        assert status == 200 and body["page"] == page and body["size"] == 7
        assert len(body["hits"]) == 7
        seen.append([h["_id"] for h in body["hits"]])
    flat = [i for p in seen for i in p]
    assert len(set(flat)) == 21  # pages do not overlap
    status, body, _ = await api.get(f"/api/audit/search/?{w}&page=1&size=21")
    assert [h["_id"] for h in body["hits"]] == flat  # and follow one order
    total = body["total"]
    assert total == summary["per_type"]["rating.submitted"]
    last = -(-total // 7)
    status, body, _ = await api.get(f"/api/audit/search/?{w}&page={last}&size=7")
    assert body["pages"] == last and len(body["hits"]) == total - 7 * (last - 1)
    status, body, _ = await api.get(f"/api/audit/search/?{w}&page={last + 1}&size=7")
    assert status == 200 and body["hits"] == []


async def test_document_shows_its_outcomes_masked(audit_api):
    api, summary, docs = audit_api
    status, body, text = await api.get(f"/api/audit/doc/{EVENT_ID}/")
    assert status == 200, body
    doc = body["doc"]
    assert doc["_id"] == EVENT_ID and doc["doc_kind"] == "event"
    assert doc["payload"]["email"] == "***" and doc["payload"]["display_name"] == "V***"
    assert re.fullmatch(r"[0-9a-f]{32}", doc["email_hash"])
    assert EMAIL not in text and "Privatename" not in text and "@" not in text
    assert body["event"]["_id"] == EVENT_ID
    assert [(o["status"], o["store"]) for o in body["outcomes"]] == [("stored", "postgres")]
    assert all(o["event_id"] == EVENT_ID for o in body["outcomes"])

    # from the outcome back to its event
    outcome_id = body["outcomes"][0]["_id"]
    status, body, _ = await api.get(f"/api/audit/doc/{outcome_id}/")
    assert status == 200 and body["doc"]["doc_kind"] == "outcome"
    assert body["event"]["_id"] == EVENT_ID

    # a dead letter: its preview is masked too, and it names its event
    dl = next(d for d in docs if d["doc_kind"] == "deadletter")
    status, body, text = await api.get(f"/api/audit/doc/{dl['_id']}/")
    assert status == 200 and body["doc"]["doc_kind"] == "deadletter"
    assert "@" not in text

    # searches are masked the same way
    status, body, text = await api.get(f"/api/audit/search/?{window(docs)}&user_id={USER_ID}")
    assert body["total"] >= 1 and EMAIL not in text and NAME not in text
    status, body, text = await api.get(
        f"/api/audit/search/?{window(docs)}&event_type=user.registered&kind=event&size=100")
    assert len(body["hits"]) > 10
    assert all(h["payload"]["email"] == "***" for h in body["hits"])
    assert all(re.fullmatch(r".\*\*\*", h["payload"]["display_name"]) for h in body["hits"])
    assert "@" not in text

    status, body, _ = await api.get("/api/audit/doc/no-such-document/")
    assert status == 404, body


@pytest.mark.parametrize("path", ["/api/audit/search/", f"/api/audit/doc/{EVENT_ID}/"])
async def test_auth_required(audit_api, path):
    api, summary, docs = audit_api
    status, body, text = await api.get(path, auth=False)
    assert status == 401 and body["error"]
    status, body, text = await api.get(path, auth=False,
                                       headers={"Authorization": "Bearer not-a-token"})
    assert status == 401
    assert "***" not in text and EVENT_ID not in text
    # the page itself is public and holds no data
    status, _, text = await api.get("/audit/", auth=False)
    assert status == 200 and "/api/audit/search/" in text and EVENT_ID not in text


@pytest.mark.parametrize("query", [
    "q=" + "x" * 201, "q=a%00b", "q=a%0Ab", "event_type=nope", "kind=secret", "status=done",
    "user_id=..%2Fetc", "movie_id=m%24ne", "since=yesterday", "until=2024-13-01",
    "since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "since=2025-01-01&until=2025-06-01",
    "since=2026-01-01T00:00:00Z&until=2026-01-01T00:00:00Z",
    "since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z&interval=1m", "interval=2m",
    "size=0", "size=101", "size=-1", "page=0", "page=x", "page=501&size=20", "sort=_id",
    "q=a&q=b", "user_id[$ne]=x"])
async def test_bad_parameters_are_400(audit_api, query):
    api, summary, docs = audit_api
    status, body, _ = await api.get("/api/audit/search/?" + query)
    assert status == 400, (query, status, body)
    assert body["error"]


@pytest.mark.parametrize("doc_id", ["a" * 201, "a%20b", "-x", "a*", "a%00b", "%22%7D"])
async def test_bad_document_ids_are_400(audit_api, doc_id):
    api, summary, docs = audit_api
    status, body, _ = await api.get(f"/api/audit/doc/{doc_id}/")
    assert status == 400, (doc_id, status, body)
