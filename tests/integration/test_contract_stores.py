"""The contract holds for any producer: events generated from docs/events.md's
rules (tests/contract/generate.py, not the simulator), sent with a plain Kafka
client to a real worker, are stored exactly once and read back verbatim;
each limit is honoured at the boundary and one past it; newest wins however
the events are batched; nothing personal reaches the audit trail."""
import asyncio
import itertools
import json
import os
import uuid
from datetime import datetime, timedelta, timezone
from typing import Dict, List
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from contract.generate import EVENTS, example, spelled
from harness import api_headers, read_topic, wait_until
from streamapp import codec
from streamapp.connections import kafka_client_options
from streamapp.topics import STREAM_OF_TYPE

pytestmark = pytest.mark.integration

#: Generated stories (a user, their account events, a title and a rating):
#: one batch through one worker, well under a minute.
STORIES = int(os.environ.get("CONTRACT_STORIES", "40"))
EMAIL = "jane.doe.private@example.org"
NAME = "Jane Private Doe"


# --- a producer written from the page ------------------------------------------

async def produce(cfg, events: List[dict], raw: Dict[int, bytes] = None) -> None:
    """Send wire dicts as the page says: key = user_id or movie_id, record
    timestamp = occurred_at, acks=all, the murmur2 partitioner (aiokafka's)."""
    producer = AIOKafkaProducer(**kafka_client_options(cfg), acks="all",
                                enable_idempotence=True, max_request_size=1024 * 1024)
    await producer.start()
    try:
        for i, wire in enumerate(events):
            kind = wire["type"]
            key = wire["movie_id"] if kind.startswith(("rating.", "title.")) else wire["user_id"]
            try:
                at = datetime.fromisoformat(wire["occurred_at"])
            except ValueError:  # a broken event on purpose
                at = datetime.now(timezone.utc)
            stream = STREAM_OF_TYPE.get(kind, "users")  # an unknown type: to users
            await producer.send(cfg.topic(stream), key=key.encode(),
                                value=(raw or {}).get(i) or orjson.dumps(wire),
                                timestamp_ms=int(at.timestamp() * 1000))
        await producer.flush()
    finally:
        await producer.stop()


async def dead_letters(cfg) -> List[dict]:
    return [{"value": r.value, "key": r.key, **{k: v.decode() for k, v in r.headers}}
            for r in await read_topic(cfg, cfg.output_topic("deadletter"))]


async def outcome_messages(cfg) -> List[bytes]:
    return [r.value for r in await read_topic(cfg, cfg.output_topic("outcomes"))]


@pytest.fixture(scope="module")
async def topics(cfg):
    """The namespace's topics, made as the simulator makes them, before the
    worker starts: on a busy shared broker a worker that creates them itself
    can be assigned before they show in its metadata, and then never reads
    them ("Ignoring missing topic")."""
    from aiokafka.admin import AIOKafkaAdminClient

    from streamapp.simulator.__main__ import ensure_topics
    from streamapp.topics import event_topic_names, output_topic_names
    await ensure_topics(cfg)
    admin = AIOKafkaAdminClient(**kafka_client_options(cfg))
    await admin.start()
    try:
        names = event_topic_names(cfg) + output_topic_names(cfg)

        async def listed():
            return set(names) <= set(await admin.list_topics())
        assert await wait_until(listed, timeout=30, interval=0.5)
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def worker(topics, namespace, tmp_path_factory):
    """The module's real worker, started once its topics exist."""
    from harness import Worker, web_port

    log = tmp_path_factory.mktemp("worker") / "worker.log"
    w = Worker(namespace, log, port=web_port()).start()
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="module")
async def api(worker):
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{worker.port}",
                                     headers=api_headers(),
                                     timeout=aiohttp.ClientTimeout(total=15)) as http:
        async def get(kind: str, ident: str):
            async with http.get(f"/api/{kind}/{quote(ident, safe='')}/") as reply:
                return reply.status, (await reply.json() if reply.status == 200 else None)
        yield get


# --- generated stories -----------------------------------------------------------

@st.composite
def story(draw):
    user = draw(EVENTS["user.registered"])
    uid = user["user_id"]
    prefs = draw(st.lists(EVENTS["preference.set"], min_size=1, max_size=3,
                          unique_by=lambda p: p["key"]))
    sub = draw(EVENTS["subscription.started"])
    pay = draw(st.one_of(EVENTS["payment.processed"], EVENTS["payment.failed"]))
    title = draw(EVENTS["title.upserted"])
    rating = draw(EVENTS["rating.submitted"])
    session = draw(EVENTS["session.started"])
    for e in (*prefs, sub, pay, rating, session):
        e["user_id"] = uid
    pay["subscription_id"] = sub["subscription_id"]
    rating["movie_id"] = session["movie_id"] = title["movie_id"]
    return [user, *prefs, sub, pay, title, rating, session]


def generated_stories(n: int) -> List[List[dict]]:
    """``n`` stories from Hypothesis' generator (edges are likely: it aims
    at boundaries), ids made unique per story so each is its own entity."""
    found: List[List[dict]] = []

    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(story())
    def collect(events):
        found.append(events)
    collect()
    run = uuid.uuid4().hex[:6]
    for i, events in enumerate(found):
        for e in events:
            for name in codec.ID_FIELDS:
                if name in e:  # unique, still the id pattern, as long as drawn (<= 64)
                    e[name] = f"{name[0]}{run}{i}-{e[name]}"[:64]
            e["event_id"] = spelled(uuid.uuid4(), spelling_of(e["event_id"]))
    return found


def spelling_of(event_id: str) -> str:
    """Which of the page's ``event_id`` spellings this is (``SPELLINGS``)."""
    if event_id.startswith("{"):
        return "braces"
    if event_id.startswith("urn:"):
        return "urn"
    if "-" not in event_id:
        return "hex"
    if event_id == event_id.lower():
        return "canonical"
    return "upper" if event_id == event_id.upper() else "mixed"


def at_the_limits(run: str) -> List[dict]:
    """One story with every string at its maximum length, astral characters
    (4 UTF-8 bytes each where the payload allows), lists at their counts."""
    uid, mid = f"U{run}".ljust(64, "x"), f"M{run}".ljust(64, "y")
    user = dict(example("user.registered"), user_id=uid, display_name="😀" * 200,
                birth_year=2025, email="a" * 64 + "@" + "b" * 190 + ".cc")
    pref = dict(example("preference.set"), user_id=uid, key="k" + "z" * 63, value="\u0301" * 256)
    title = dict(example("title.upserted"), movie_id=mid, title="漢" * 4000,
                 synopsis="مرحبا" * 800, year=2100, runtime_min=1000,
                 genres=["g"] * 200, similar=[mid] * 200,
                 artwork=[dict(example("title.upserted")["artwork"][0], width=20000, height=1)])
    rating = dict(example("rating.submitted"), user_id=uid, movie_id=mid, score=10)
    for e in (user, pref, title, rating):
        e["event_id"] = str(uuid.uuid4())
    user["occurred_at"] = "2000-01-01T00:00:00Z"
    pref["occurred_at"] = "1999-12-31T14:00:00.000001-10:00"
    return [user, pref, title, rating]


@pytest.fixture(scope="module")
async def generated(worker, cfg, stores):
    stories = generated_stories(STORIES) + [at_the_limits(uuid.uuid4().hex[:6])]
    events = [e for s in stories for e in s]
    await produce(cfg, events)
    ids = [str(uuid.UUID(e["event_id"].removeprefix("urn:uuid:"))) for e in events]
    accounts = [i for i, e in zip(ids, events) if STREAM_OF_TYPE[e["type"]] in
                ("users", "subscriptions", "payments", "preferences")]
    pool = await stores.postgres.pool()

    seen = {}

    async def landed():
        seen["stored"] = await pool.fetchval("SELECT count(*) FROM applied_events WHERE "
                                             "event_id = ANY($1::uuid[])", accounts)
        await stores.audit.refresh()
        seen["audited"] = await stores.audit.count(doc_kind="event")
        return seen["stored"] == len(accounts) and seen["audited"] >= len(events)
    if not await wait_until(landed, timeout=180, interval=1):
        letters = [(d["x-reason"], d["x-detail"]) for d in await dead_letters(cfg)]
        pytest.fail(f"not every event landed: {seen}, of {len(accounts)} account events and "
                    f"{len(events)} events; dead letters: {letters[:10]}")
    return stories, events, ids


async def test_no_generated_event_is_dead_lettered(generated, cfg):
    letters = await dead_letters(cfg)
    assert letters == [], [(d["x-reason"], d["x-detail"]) for d in letters]


async def test_each_event_is_stored_exactly_once_in_each_store(generated, stores, cfg):
    stories, events, ids = generated
    pool = await stores.postgres.pool()
    by_type: Dict[str, List[str]] = {}
    for e, i in zip(events, ids):
        by_type.setdefault(e["type"], []).append(i)
    ledger = await pool.fetch("SELECT event_id::text, count(*) AS n FROM applied_events "
                              "WHERE event_id = ANY($1::uuid[]) GROUP BY event_id", ids)
    account_ids = [i for e, i in zip(events, ids) if not e["type"].startswith(
        ("rating.", "title.", "session."))]
    assert sorted(r["event_id"] for r in ledger) == sorted(account_ids)
    assert all(r["n"] == 1 for r in ledger)
    ratings = await pool.fetch("SELECT event_id::text FROM ratings WHERE event_id = ANY($1::uuid[])",
                               by_type["rating.submitted"])
    assert sorted(r["event_id"] for r in ratings) == sorted(by_type["rating.submitted"])
    paid = by_type.get("payment.processed", []) + by_type.get("payment.failed", [])
    payments = await pool.fetchval("SELECT count(*) FROM payments WHERE event_id = ANY($1::uuid[])",
                                   paid)
    assert payments == len(paid) == len(stories) - 1  # the story at the limits pays nothing
    titles = [e["movie_id"] for e in events if e["type"] == "title.upserted"]

    async def rated_once():  # the aggregate follows PostgreSQL's totals
        docs = await stores.mongo.titles(titles)
        return sorted(docs) == sorted(titles) and all(
            doc.get("ratings", {}).get("count") == 1 for doc in docs.values())
    assert await wait_until(rated_once, timeout=30, interval=0.5)
    docs = await stores.mongo.movies()
    assert await docs.count_documents({"_id": {"$in": titles}}) == len(titles)
    for event_id in ids[:: max(1, len(ids) // 40)]:  # the audit: once per event_id
        assert await stores.audit.count(event_id=event_id, doc_kind="event") == 1, event_id


def _instant(text_: str) -> datetime:
    return datetime.fromisoformat(text_)


async def test_every_event_reads_back_verbatim_through_the_api(generated, api):
    stories, _, _ = generated
    for user, *rest in stories:
        prefs = [e for e in rest if e["type"] == "preference.set"]
        sub = next((e for e in rest if e["type"] == "subscription.started"), None)
        pay = next((e for e in rest if e["type"].startswith("payment.")), None)
        title = next(e for e in rest if e["type"] == "title.upserted")
        status, body = await api("users", user["user_id"])
        assert status == 200, user["user_id"]
        for name in ("user_id", "email", "display_name", "country", "birth_year"):
            assert body[name] == user[name], name
        assert _instant(body["registered_at"]) == _instant(user["occurred_at"])
        assert {k: v["value"] for k, v in body["preferences"].items()} == \
            {p["key"]: p["value"] for p in prefs}
        if pay is not None:
            (got_sub,) = body["subscriptions"]
            assert {k: got_sub[k] for k in ("subscription_id", "plan", "price_cents",
                                            "currency")} \
                == {k: sub[k] for k in ("subscription_id", "plan", "price_cents", "currency")}
            (got_pay,) = body["payments"]
            for name in ("payment_id", "amount_cents", "currency", "card_last4"):
                assert got_pay[name] == pay[name], name
            assert got_pay["failure_reason"] == pay.get("failure_reason")

        status, doc = await api("titles", title["movie_id"])
        assert status == 200, title["movie_id"]
        for name in ("title", "year", "genres", "directors", "similar", "cast", "artwork",
                     "synopsis", "runtime_min"):
            assert doc[name] == title[name], name
        assert doc["counts"]["votes"] == 1


# --- one past each limit: dead-lettered with the precise reason ---------------------

PAST = [
    ("user.registered", {"display_name": "😀" * 201}, "too_long", "display_name is 201 chars > 200"),
    ("user.updated", {"display_name": "a" * 201}, "too_long", "display_name is 201 chars > 200"),
    ("preference.set", {"value": "\u0301" * 257}, "too_long", "value is 257 chars > 256"),
    ("preference.set", {"key": "autoplay\n"}, "bad_value", None),
    ("user.registered", {"birth_year": 2026}, "out_of_range", "birth_year must be 1900..2025"),
    ("user.registered", {"country": "PT\n"}, "bad_value", None),
    ("subscription.started", {"currency": "USD\n"}, "bad_value", None),
    ("payment.processed", {"card_last4": "4242\n"}, "bad_value", None),
    ("title.upserted", {"genres": ["g"] * 201}, "too_long", "genres has 201 items > 200"),
    ("title.upserted", {"title": "漢" * 4001}, "too_long", "title is 4001 chars > 4000"),
    ("rating.submitted", {"movie_id": "m" * 65}, "bad_id", None),
    ("rating.submitted", {"score": 10.0}, "wrong_type", "score must be an integer, not number"),
    ("rating.submitted", {"schema_version": 1.0}, "wrong_type", None),
    ("rating.submitted", {"schema_version": True}, "wrong_type", None),
    ("rating.submitted", {"schema_version": "1"}, "wrong_type", None),
    ("rating.submitted", {"occurred_at": "1999-12-31T23:59:59.999999Z"}, "out_of_range", None),
    ("rating.submitted", {"occurred_at": "2026-01-01T00:00:00.1234567Z"}, "bad_timestamp", None),
]


async def test_one_past_each_limit_is_dead_lettered_with_its_reason(generated, cfg):
    sent = []
    for kind, change, _, _ in PAST:
        wire = dict(example(kind), event_id=str(uuid.uuid4()), **change)
        sent.append(wire)
    before = len(await dead_letters(cfg))
    await produce(cfg, sent)

    async def all_in():
        return len(await dead_letters(cfg)) - before >= len(sent)
    assert await wait_until(all_in, timeout=60, interval=1)
    letters = {json.loads(d["value"])["event_id"]: d for d in await dead_letters(cfg)}
    for wire, (_kind, change, reason, detail) in zip(sent, PAST):
        letter = letters[wire["event_id"]]
        assert letter["x-reason"] == reason, (change, letter["x-detail"])
        if detail:
            assert letter["x-detail"] == detail
        assert letter["x-reason"] != "store_refused"


# --- newest wins, whatever the batching and order ---------------------------------

T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=3)


def _pair(entity: str, tag: str, tie: bool):
    """(older, newer, check) for one entity; ``check(api)`` says whether the
    newer one won.  On a tie the newer has the greater event_id."""
    low, high = sorted(str(uuid.uuid4()) for _ in range(2))
    t_old, t_new = T0, T0 if tie else T0 + timedelta(seconds=1)
    uid, mid, sid = f"u{tag}", f"m{tag}", f"s{tag}"

    def at(e, t, eid):
        return dict(e, occurred_at=t.isoformat(), event_id=eid.upper() if tie else eid)
    if entity == "preference":
        old = at(dict(example("preference.set"), user_id=uid, value="old"), t_old, low)
        new = at(dict(example("preference.set"), user_id=uid, value="new"), t_new, high)

        async def check(api):
            _, body = await api("users", uid)
            return body and body["preferences"].get(old["key"], {}).get("value") == "new"
    elif entity == "profile":
        old = at(dict(example("user.registered"), user_id=uid, display_name="Old",
                      email="old@example.com"), t_old, low)
        new = at(dict(example("user.updated"), user_id=uid, display_name="New", country=None,
                      email=None), t_new, high)

        async def check(api):
            _, body = await api("users", uid)
            return body and (body["display_name"], body["email"], body["inferred"]) == \
                ("New", "old@example.com", False)
    elif entity == "subscription":
        old = at(dict(example("subscription.changed"), user_id=uid, subscription_id=sid,
                      plan="standard", price_cents=111), t_old, low)
        new = at(dict(example("subscription.started"), user_id=uid, subscription_id=sid,
                      plan="premium", price_cents=222), t_new, high)

        async def check(api):
            _, body = await api("users", uid)
            subs = body and body["subscriptions"]
            return subs and (subs[0]["plan"], subs[0]["price_cents"]) == ("premium", 222)
    elif entity == "title":
        old = at(dict(example("title.upserted"), movie_id=mid, title="Old"), t_old, low)
        new = at(dict(example("title.upserted"), movie_id=mid, title="New", genres=["new"]),
                 t_new, high)

        async def check(api):
            _, doc = await api("titles", mid)
            return doc and (doc.get("title"), doc.get("genres"), doc.get("removed")) == \
                ("New", ["new"], False)
    elif entity == "comeback":  # an upsert newer than the removal brings the title back
        old = at(dict(example("title.removed"), movie_id=mid), t_old, low)
        new = at(dict(example("title.upserted"), movie_id=mid, title="Back"), t_new, high)

        async def check(api):
            _, doc = await api("titles", mid)
            return doc and (doc.get("title"), doc.get("removed")) == ("Back", False)
    else:  # removal newer than the title's upsert: removed, content kept
        old = at(dict(example("title.upserted"), movie_id=mid, title="Kept"), t_old, low)
        new = at(dict(example("title.removed"), movie_id=mid), t_new, high)

        async def check(api):
            _, doc = await api("titles", mid)
            return doc and (doc.get("title"), doc.get("removed")) == ("Kept", True)
    return old, new, check


ENTITIES = ("preference", "profile", "subscription", "title", "removal", "comeback")


async def test_newest_wins_in_one_batch_or_two_in_either_order(generated, cfg, api):
    run = uuid.uuid4().hex[:6]
    cases = []
    for n, (entity, batches, order, tie) in enumerate(itertools.product(
            ENTITIES, ("one", "two"), ("old-first", "new-first"), (False, True))):
        old, new, check = _pair(entity, f"{run}n{n}", tie)
        first, second = (old, new) if order == "old-first" else (new, old)
        cases.append((f"{entity}/{batches} batch/{order}/{'tie' if tie else 'newer'}",
                      batches, first, second, check))
    # wave 1: both events of one-batch cases (back to back), the first of the others
    await produce(cfg, [e for _, b, f, s, _ in cases for e in ((f, s) if b == "one" else (f,))])

    async def first_wave_applied():
        for _name, batches, first, _second, _check in cases:
            if batches == "two":
                kind = "titles" if first["type"].startswith("title.") else "users"
                ident = first.get("movie_id") or first["user_id"]
                status, _ = await api(kind, ident)
                if status != 200:
                    return False
        return True
    assert await wait_until(first_wave_applied, timeout=60, interval=1)
    await asyncio.sleep(1.5)  # let the first wave's batches finish everywhere
    await produce(cfg, [s for _, b, f, s, _ in cases if b == "two"])

    async def lost():
        return [name for name, *_, check in cases if not await check(api)]

    async def none_lost():
        return not await lost()
    assert await wait_until(none_lost, timeout=60, interval=1), await lost()
    assert [d for d in await dead_letters(cfg) if d["x-reason"] == "store_refused"] == []


# --- nothing personal in the audit trail, whatever the input -------------------------

async def test_no_pii_reaches_dead_letters_outcomes_or_the_audit_trail(generated, cfg, stores):
    odd = [
        dict(example("user.registered"), event_id=str(uuid.uuid4()), email=[EMAIL]),
        dict(example("user.registered"), event_id=str(uuid.uuid4()), display_name={"n": NAME}),
        dict(example("user.registered"), event_id=str(uuid.uuid4()), email=7,
             display_name=[[NAME]], contact={"email": EMAIL}),
        dict(example("user.updated"), event_id=str(uuid.uuid4()), email={"v": EMAIL}),
        dict(example("user.registered"), event_id=EMAIL, email=EMAIL),
        dict(example("user.registered"), event_id=str(uuid.uuid4()), type=f"user.{EMAIL}"),
        dict(example("user.registered"), event_id=str(uuid.uuid4()),
             occurred_at=f"2026-01-01T00:00:00Z {EMAIL}"),
    ]
    await produce(cfg, odd)
    ids = {codec.canonical_event_id(e["event_id"]) for e in odd} - {None}

    async def named():
        await stores.audit.refresh()
        docs = (await stores.audit.search(doc_kind="deadletter", size=1000))["hits"]
        return {d["event_id"]: d["event_type"] for d in docs if d.get("event_id") in ids}

    async def audited():
        return set(await named()) == ids
    assert await wait_until(audited, timeout=60, interval=1), await named()
    letters = [d for d in await dead_letters(cfg) if d.get("x-source-topic", "").endswith(".users")]
    headers_text = json.dumps([{k: v for k, v in d.items() if k.startswith("x-")} for d in letters])
    assert EMAIL not in headers_text and NAME not in headers_text
    outcomes = b"".join(await outcome_messages(cfg)).decode()
    assert EMAIL not in outcomes and NAME not in outcomes
    reply = await stores.audit.client.search(index=f"{stores.audit.prefix}-*",
                                             body={"query": {"match_all": {}}, "size": 10_000})
    everything = json.dumps([h["_source"] for h in reply["hits"]["hits"]])
    assert EMAIL not in everything and NAME not in everything
    assert "Jane" not in everything
    # refused events keep their id and type in the dead-letter documents (the
    # event with an unknown type: its id only)
    assert set((await named()).values()) == {"user.registered", "user.updated", None}


async def test_a_real_store_refusal_is_described_without_the_row(stores):
    """What _isolate sends on when PostgreSQL refuses a row: no values."""
    import asyncpg

    from streamapp.stores.base import describe_error
    pool = await stores.postgres.pool()
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        await pool.execute("INSERT INTO users (user_id, email, display_name, inferred, "
                           "registered_at, updated_at) VALUES ('zz', $1, $2, false, now(), now())",
                           EMAIL, NAME * 20)
    assert EMAIL in str(caught.value)  # PostgreSQL's own message quotes the row
    described = describe_error(caught.value)
    assert EMAIL not in described and NAME not in described
    assert "users_display_name_check" in described
