"""The whole pipeline on the real stack: the simulator's stream lands in every
store exactly as its summary says, a replay changes nothing, and the audit
index holds every event without raw PII."""
import asyncio
import json
import os

import pytest

from harness import expected_vs_tally, simulate, wait_until
from streamapp.tally import tally

pytestmark = pytest.mark.integration

#: ``PIPELINE_EVENTS=50000`` runs the full-size check of the issue; make test runs 6000.
COUNT = os.environ.get("PIPELINE_EVENTS", "6000")
#: Long enough for the stores to catch up with COUNT events on a 2-core machine.
SETTLE_S = 180 + int(COUNT) // 50


async def _landed(stores, cfg, summary):
    async def check():
        return not expected_vs_tally(summary, await tally(stores, cfg))
    ok = await wait_until(check, timeout=SETTLE_S, interval=2)
    assert ok, expected_vs_tally(summary, await tally(stores, cfg))


@pytest.fixture(scope="module")
async def produced(worker, namespace, stores, cfg, tmp_path_factory):
    summary = simulate(namespace, "--count", COUNT, "--seed", "7", "--bad-share", "0.01",
                       summary=tmp_path_factory.mktemp("sim") / "summary.json")
    await _landed(stores, cfg, summary)
    return summary


async def test_every_store_matches_the_simulator_summary(produced, stores, cfg):
    counts = await tally(stores, cfg)
    assert counts["postgres"]["users"] == produced["expect"]["postgres"]["users"] > 0
    assert counts["postgres"]["inferred_users"] == 0
    assert counts["mongodb"]["rated_votes"] == counts["postgres"]["ratings"]
    assert counts["deadletter"] == produced["expect"]["deadletter"] > 0


async def test_replaying_the_same_events_changes_nothing(produced, namespace, stores, cfg,
                                                         tmp_path_factory):
    before = await tally(stores, cfg)
    again = simulate(namespace, "--count", COUNT, "--seed", "7", "--bad-share", "0.01",
                     summary=tmp_path_factory.mktemp("sim2") / "summary.json")
    assert again["expect"] == produced["expect"]
    # dead letters are Kafka records, so they do double; everything stored must not
    expected = json.loads(json.dumps(produced))
    expected["expect"]["deadletter"] *= 2
    await _landed(stores, cfg, expected)
    after = await tally(stores, cfg)
    for store in ("postgres", "mongodb", "redis"):
        assert after[store] == before[store], store


async def test_leaderboards_are_mirrored_from_the_tables(produced, stores):

    async def mirrored():
        top = await stores.redis.top(stores.redis.keys.rated_all, 1000)
        return sum(score for _, score in top) == produced["expect"]["postgres"]["ratings"]
    assert await wait_until(mirrored, timeout=30)
    top = await stores.redis.top(stores.redis.keys.rated_all, 3)
    pool = await stores.postgres.pool()
    # the most rated title leads (equal scores: the greater id first, as in Redis)
    leader = await pool.fetchrow("SELECT movie_id, votes FROM title_rating_totals "
                                 "ORDER BY votes DESC, movie_id DESC LIMIT 1")
    assert (top[0][0], top[0][1]) == (leader["movie_id"], leader["votes"])
    best = await stores.redis.top(stores.redis.keys.best_rated, 5)
    assert best and all(1 <= score <= 10 for _, score in best)


async def test_a_restarted_worker_rebuilds_the_leaderboards(produced, worker, stores):
    """Boards are mirrored a moment after counting, so a worker that dies in
    between leaves them behind; every start rebuilds the boards of the
    worker's titles from PostgreSQL's totals and the window tables."""

    pool = await stores.postgres.pool()
    expected = {r["movie_id"]: r["votes"] for r in await pool.fetch(
        "SELECT movie_id, votes FROM title_rating_totals WHERE votes > 0")}
    worker.stop()
    await stores.redis.client.delete(stores.redis.keys.rated_all)
    worker.start()
    await asyncio.to_thread(worker.wait_ready)

    async def rebuilt():
        return {m: int(s) for m, s in await stores.redis.top(stores.redis.keys.rated_all, 100_000)} == expected
    assert await wait_until(rebuilt, timeout=30, interval=0.5)


async def test_audit_holds_every_event_and_no_raw_pii(produced, stores):
    async def indexed():
        await stores.audit.refresh()
        return await stores.audit.count(doc_kind="event") == produced["valid"]
    assert await wait_until(indexed, timeout=120, interval=2)
    assert await stores.audit.count(doc_kind="deadletter") >= produced["expect"]["deadletter"]
    pool = await stores.postgres.pool()
    emails = [r["email"] for r in await pool.fetch("SELECT email FROM users LIMIT 20")]
    tokens = [r["card_token"] for r in await pool.fetch("SELECT card_token FROM payments LIMIT 20")]
    assert emails and tokens
    for raw in emails + tokens:
        reply = await stores.audit.client.search(
            index=f"{stores.audit.prefix}-*",
            body={"query": {"query_string": {"query": f'"{raw}"'}}, "size": 1})
        assert reply["hits"]["total"]["value"] == 0, raw
    sample = await stores.audit.search(event_type="user.registered", doc_kind="event", size=200)
    blob = json.dumps(sample["hits"])
    assert not any(raw in blob for raw in emails + tokens)
    assert all(hit.get("email_hash") for hit in sample["hits"])
