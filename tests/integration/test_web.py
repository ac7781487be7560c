"""The read side on the real stack: a real worker serves the JSON views over
what the simulator produced, and answers bad input with 400s, not 500s.

The module runs its own worker on a free port, with its own PostgreSQL and
MongoDB databases and Redis database, so it never shares state with other
test modules (which use ``harness.reset_stores`` on the shared test
databases).
"""
from __future__ import annotations

import asyncio
import re
import shutil
import socket
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Dict, Tuple

import aiohttp
import orjson
import pytest
from yarl import URL

from harness import (
    Worker,
    api_headers,
    catalog_gaps,
    expected_vs_tally,
    isolated_env,
    reset_stores,
    settings_for,
    simulate,
    stores_for,
    wait_until,
)
from streamapp.tally import tally

pytestmark = pytest.mark.integration

DB_NAME = "streamapp_test_web"
REDIS_DB = 5
EVENTS = "3000"
SEED = "11"
STREAMS = ("users", "subscriptions", "payments", "preferences", "ratings", "sessions", "catalog")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def drop_audit_indices(stores) -> None:
    try:
        await stores.audit.client.indices.delete(
            index=f"{stores.audit.prefix}-*",
            params={"ignore_unavailable": "true", "allow_no_indices": "true"})
    except Exception:
        pass  # best effort: the audit store is optional


@dataclass
class Service:
    base: str
    env: Dict[str, str]
    summary: dict
    stores: object
    http: aiohttp.ClientSession

    async def get(self, path: str) -> Tuple[int, object]:
        url = URL(self.base + path, encoded=True)  # keep %2F and friends as sent
        async with self.http.get(url, headers=api_headers(self.env)) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()


@pytest.fixture(scope="module")
async def service(tmp_path_factory):
    env = isolated_env(database=DB_NAME, redis_db=REDIS_DB)
    await reset_stores(env)
    port = free_port()
    tmp = tmp_path_factory.mktemp("web")
    worker = Worker(env, tmp / "worker.log", port=port)
    stores = stores_for(env)
    cfg = settings_for(env)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
    try:
        worker.start()
        await asyncio.to_thread(worker.wait_ready, 60)
        summary = await asyncio.to_thread(simulate, env, "--count", EVENTS, "--seed", SEED,
                                          summary=tmp / "summary.json")
        ratings = summary["expect"]["postgres"]["ratings"]

        async def caught_up():
            if expected_vs_tally(summary, await tally(stores, cfg)):
                return False
            top = await stores.redis.top(stores.redis.keys.rated_all, 1000)
            return sum(score for _, score in top) == ratings  # leaderboards mirrored

        if not await wait_until(caught_up, timeout=60, interval=1):
            diffs = expected_vs_tally(summary, await tally(stores, cfg))
            pytest.fail(f"stores did not catch up: {diffs}\n{worker.tail()}")
        yield Service(f"http://127.0.0.1:{port}", env, summary, stores, http)
    finally:
        await http.close()
        worker.stop()
        await drop_audit_indices(stores)
        await stores.close()
        shutil.rmtree(env["STREAMAPP_DATA_DIR"], ignore_errors=True)


def _sorted_desc(entries) -> bool:
    scores = [e["score"] for e in entries]
    return scores == sorted(scores, reverse=True)


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value)


# --- titles -------------------------------------------------------------------

def expected_starts() -> Counter:
    """Session starts per title of the stream the fixture produced, from the
    simulator itself (same seed: its choices do not depend on the clock)."""
    from streamapp.simulator.world import World

    return Counter(orjson.loads(value)["movie_id"]
                   for stream, _, value, _, _ in World(int(SEED), 2000, 500).events(int(EVENTS))
                   if stream == "sessions" and b'"session.started"' in value)


async def test_title_has_document_counts_and_ranks(service):
    pool = await service.stores.postgres.pool()
    # the most rated title (equal votes: the greater id first, as Redis ranks them)
    movie = await pool.fetchval("SELECT movie_id FROM title_rating_totals "
                                "ORDER BY votes DESC, movie_id DESC LIMIT 1")
    status, body = await service.get(f"/api/titles/{movie}/")
    assert status == 200, body
    assert body["movie_id"] == movie and "_id" not in body
    assert body["title"] and body["genres"] and body["removed"] is False
    _iso(body["updated_at"])  # datetimes are ISO strings
    votes, score_sum = await pool.fetchrow(
        "SELECT votes, score_sum FROM title_rating_totals WHERE movie_id = $1", movie)
    counts = body["counts"]
    assert (counts["votes"], counts["score_sum"]) == (votes, score_sum) and votes > 0
    assert counts["average"] == pytest.approx(score_sum / votes, abs=1e-4)
    for window in ("1m", "1h"):
        assert 0 <= counts[window]["ratings"] <= votes
        _iso(counts[window]["window_start"])
    assert body["ranks"]["most_rated"] == 1
    starts = expected_starts()
    if starts[movie]:
        ahead = sum(1 for m, n in starts.items() if (n, m) > (starts[movie], movie))
        assert body["ranks"]["most_watched"] == ahead + 1
    best = await service.stores.redis.rank(service.stores.redis.keys.best_rated, movie)
    assert best is not None and body["ranks"]["best_rated"] == best
    assert body["served_by"] == service.base

    # the second read comes from the Redis cache and says the same
    status, again = await service.get(f"/api/titles/{movie}/")
    assert status == 200
    volatile = ("counts", "ranks", "now_watching")
    assert {k: v for k, v in again.items() if k not in volatile} == \
        {k: v for k, v in body.items() if k not in volatile}
    assert await service.stores.redis.client.exists(service.stores.redis.keys.catalog(movie))


async def test_unknown_title_is_404(service):
    status, body = await service.get("/api/titles/m99999/")
    assert status == 404 and "m99999" in body["error"]


# --- users ---------------------------------------------------------------------

async def test_user_profile_without_card_data(service):
    pool = await service.stores.postgres.pool()
    user_id = await pool.fetchval(
        """SELECT user_id FROM payments GROUP BY user_id
           ORDER BY count(*) DESC, user_id LIMIT 1""")
    expected = await pool.fetch(
        """SELECT payment_id FROM payments WHERE user_id = $1
           ORDER BY occurred_at DESC, payment_id DESC LIMIT 10""", user_id)
    status, body = await service.get(f"/api/users/{user_id}/")
    assert status == 200, body
    assert body["user_id"] == user_id and "@" in body["email"]
    assert [p["payment_id"] for p in body["payments"]] == [r["payment_id"] for r in expected]
    for payment in body["payments"]:
        assert set(payment) == {"payment_id", "subscription_id", "status", "amount_cents",
                                "currency", "card_last4", "failure_reason", "occurred_at"}
        assert re.fullmatch(r"[0-9]{4}", payment["card_last4"])
        _iso(payment["occurred_at"])
    assert all(s["status"] == "active" for s in body["current_subscriptions"])
    assert body["subscriptions"], "a paying user has a subscription"
    # the card token never leaves the database
    async with service.http.get(service.base + f"/api/users/{user_id}/",
                                headers=api_headers(service.env)) as response:
        assert response.status == 200
        raw = await response.text()
    assert "tok_" not in raw and "card_token" not in raw


async def test_first_user_of_the_simulation(service):
    status, body = await service.get("/api/users/u0000001/")
    assert status == 200, body
    assert body["inferred"] is False and body["registered_at"]
    assert isinstance(body["preferences"], dict)


async def test_unknown_user_is_404(service):
    status, body = await service.get("/api/users/u9999999/")
    assert status == 404 and body["error"]


# --- leaderboards ------------------------------------------------------------------

async def test_leaderboards_sorted_with_names(service):
    status, rated = await service.get("/api/leaderboards/?board=rated&n=10")
    assert status == 200, rated
    entries = rated["entries"]
    assert len(entries) == 10 and _sorted_desc(entries)
    pool = await service.stores.postgres.pool()
    votes = dict(await pool.fetch("SELECT movie_id, votes FROM title_rating_totals"))
    assert [e["score"] for e in entries] == sorted(votes.values(), reverse=True)[:10]
    assert all(e["score"] == votes[e["movie_id"]] for e in entries)
    assert [e["rank"] for e in entries] == list(range(1, 11))
    assert all(e["title"] for e in entries)

    status, best = await service.get("/api/leaderboards/?board=best&n=5")
    assert status == 200 and best["entries"] and _sorted_desc(best["entries"])
    assert all(1 <= e["score"] <= 10 for e in best["entries"])

    status, watched = await service.get("/api/leaderboards/?board=watched")
    assert status == 200 and watched["entries"] and _sorted_desc(watched["entries"])
    starts = expected_starts()
    assert [e["score"] for e in watched["entries"]] == \
        sorted(starts.values(), reverse=True)[:len(watched["entries"])]
    assert all(e["score"] == starts[e["movie_id"]] for e in watched["entries"])

    status, window = await service.get("/api/leaderboards/?board=window&window=1m&n=100")
    assert status == 200 and window["window"] == "1m" and _sorted_desc(window["entries"])
    _iso(window["window_start"])
    status, hop = await service.get("/api/leaderboards/?board=window&window=1h")
    assert status == 200 and hop["window"] == "1h" and _sorted_desc(hop["entries"])


async def test_genre_leaderboard(service):
    from streamapp.web.views import GENRES

    seen = 0
    for genre in sorted(GENRES):
        status, board = await service.get(f"/api/leaderboards/?board=rated&genre={genre}&n=5")
        assert status == 200, board
        assert board["genre"] == genre and len(board["entries"]) <= 5
        assert _sorted_desc(board["entries"])
        stored = await service.stores.redis.top(service.stores.redis.keys.genre(genre), 5)
        assert [(e["movie_id"], e["score"]) for e in board["entries"]] == \
            [(m, int(score)) for m, score in stored]
        for entry in board["entries"]:
            assert entry["title"]
            # genre boards count all-time ratings, like the "rated" board
            assert entry["score"] == await service.stores.redis.client.zscore(
                service.stores.redis.keys.rated_all, entry["movie_id"])
        seen += bool(board["entries"])
    assert seen >= 3  # 15 genres, ratings on dozens of titles


# --- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/api/titles/..%2F/",
    "/api/titles/%2E%2E/",
    "/api/titles/-m00000/",
    "/api/titles/" + "m" * 65 + "/",
    "/api/titles/m0%20/",
    "/api/users/u0000001%27%20OR%201=1/",
    "/api/users/%24%7B7*7%7D/",
    "/api/leaderboards/?n=0",
    "/api/leaderboards/?n=101",
    "/api/leaderboards/?n=ten",
    "/api/leaderboards/?n=-1",
    "/api/leaderboards/?board=nope",
    "/api/leaderboards/?board=window&window=5m",
    "/api/leaderboards/?board=rated&genre=nope",
    "/api/leaderboards/?board=best&genre=drama",
    "/api/leaderboards/?board=rated&window=1m",
    "/api/audit/?since=yesterday",
    "/api/audit/?until=2024-13-01",
    "/api/audit/?since=2025-02-01&until=2025-01-01",
    "/api/audit/?size=0",
    "/api/audit/?size=1000",
    "/api/audit/?event_type=nope",
    "/api/audit/?kind=secret",
    "/api/audit/?user_id=..%2Fetc",
])
async def test_bad_parameters_are_400_json(service, path):
    status, body = await service.get(path)
    assert status == 400, (path, status, body)
    assert isinstance(body, dict) and body["error"]


# --- audit, health, stats ---------------------------------------------------------------

async def test_audit_search_answers_json(service):
    status, body = await service.get(
        "/api/audit/?event_type=rating.submitted&kind=event&size=5"
        "&since=2000-01-01T00:00:00Z")
    assert status in (200, 503), body
    if status == 503:
        assert body["error"] and body["store"] == "audit"
        return
    assert isinstance(body["total"], int) and len(body["hits"]) <= 5
    for hit in body["hits"]:
        assert hit["event_type"] == "rating.submitted" and hit["doc_kind"] == "event"


async def test_health_reports_stores_and_lag(service):
    status, body = await service.get("/api/health/")
    assert status == 200, body
    assert body["status"] == "ok"
    for name in ("postgres", "mongodb", "redis"):
        assert body["stores"][name]["ok"] is True and body["stores"][name]["required"]
    assert set(body["stores"]["audit"]) >= {"ok", "required"}
    assert body["stores"]["audit"]["required"] is False
    prefix = service.env["TOPIC_PREFIX"]
    topics = body["consumer"]["topics"]
    assert f"{prefix}.ratings" in topics, topics
    assert not any(t.endswith("-changelog") for t in topics)

    async def drained():
        _, now = await service.get("/api/health/")
        lags = {t: now["consumer"]["topics"].get(f"{prefix}.{t}", {}).get("lag")
                for t in STREAMS}
        return all(lag == 0 for lag in lags.values()) and lags

    # everything was consumed, so once the offsets are committed the lag is 0
    assert await wait_until(drained, timeout=20, interval=1)
    part = topics[f"{prefix}.ratings"]["partitions"]
    assert set(part) == {"0", "1", "2", "3"}
    assert all(p["highwater"] is not None for p in part.values())


async def test_stats_counts_what_the_deployment_consumed(service):
    async def committed():
        status, body = await service.get("/api/stats/")
        assert status == 200, body
        consumed = body["events_consumed"]
        done = all(consumed.get(stream, 0) >= produced
                   for stream, produced in service.summary["per_topic"].items())
        return done and body
    # consumption is the group's committed offsets, which trail processing
    body = await wait_until(committed, timeout=20, interval=1)
    assert body, "the committed offsets never reached what was produced"
    consumed = body["events_consumed"]
    assert set(consumed) == set(STREAMS)
    assert body["events_total"] == sum(consumed.values()) >= service.summary["events"]
    assert body["stored"]["postgres"] > 0 and body["stored"]["redis"] > 0
    assert body["rejected"] == {}  # the simulator ran without bad events
    assert isinstance(body["now_watching"], int) and body["now_watching"] > 0
    port = service.base.rsplit(":", 1)[1]
    assert [w["url"].rsplit(":", 1)[1] for w in body["workers"]] == [port], body["workers"]


# --- Faust's own pages and the dashboard ---------------------------------------------------

async def test_operator_pages(service):
    status, metrics = await service.get("/metrics")
    assert status == 200 and "streamapp_events_stored_total" in metrics
    assert 'streamapp_events_consumed_total{stream="ratings"}' in metrics
    status, _ = await service.get("/")
    assert status == 200
    status, assignment = await service.get("/assignment/")
    assert status == 200 and assignment


async def test_dashboard_page_is_served(service):
    async with service.http.get(service.base + "/dashboard/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        html = await response.text()
    for testid in ("events-total", "board-window", "board-best", "board-watched",
                   "health-postgres", "now-watching"):
        assert f'data-testid="{testid}"' in html
    assert "http://" not in html and "https://" not in html  # no external resources


# --- routing with several workers --------------------------------------------------------

ROUTING_DB = "streamapp_test_web_routing"
ROUTING_REDIS_DB = 7


async def test_title_requests_reach_the_worker_that_counts_the_title(tmp_path):
    """Two workers share the partitions; either one answers for any title
    with the counts of the worker that owns the title's partition."""
    env = isolated_env(database=ROUTING_DB, redis_db=ROUTING_REDIS_DB)
    await reset_stores(env)
    workers = [
        Worker({**env, "STREAMAPP_DATA_DIR": f"{env['STREAMAPP_DATA_DIR']}-{i}"},
               tmp_path / f"worker-{i}.log", port=free_port())
        for i in range(2)]
    stores = stores_for(env)
    cfg = settings_for(env)
    ratings_topic = f"{env['TOPIC_PREFIX']}.ratings"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            async def get(worker, path):
                async with http.get(f"http://127.0.0.1:{worker.port}{path}") as response:
                    return response.status, await response.json()

            async def ratings_partitions(worker):
                status, health = await get(worker, "/api/health/")
                return {str(p) for p in health.get("worker", {}).get("partitions", {}).get(
                    ratings_topic, [])}

            for w in workers:
                w.start()
            for w in workers:
                await asyncio.to_thread(w.wait_ready, 60)

            async def balanced():
                try:
                    a, b = [await ratings_partitions(w) for w in workers]
                except aiohttp.ClientError:
                    return False
                return a and b and not a & b and a | b == {"0", "1", "2", "3"} and (a, b)

            split = await wait_until(balanced, timeout=45, interval=1)
            assert split, "the two workers did not share the partitions"
            summary = await asyncio.to_thread(simulate, env, "--count", "1500", "--seed", SEED,
                                              summary=tmp_path / "summary.json")

            async def caught_up():
                return not expected_vs_tally(summary, await tally(stores, cfg))
            assert await wait_until(caught_up, timeout=60), (
                expected_vs_tally(summary, await tally(stores, cfg)),
                await catalog_gaps(cfg, stores))

            pool = await stores.postgres.pool()
            totals = {r["movie_id"]: r["votes"] for r in await pool.fetch(
                "SELECT movie_id, votes FROM title_rating_totals ORDER BY votes DESC LIMIT 12")}
            servers = set()
            for movie_id, votes in totals.items():
                answers = [await get(w, f"/api/titles/{movie_id}/") for w in workers]
                assert [status for status, _ in answers] == [200, 200], answers
                (_, one), (_, other) = answers
                assert one["served_by"] == other["served_by"], movie_id
                assert one["counts"]["votes"] == other["counts"]["votes"] == votes, movie_id
                servers.add(one["served_by"])
            # a dozen titles spread over four partitions land on both workers
            assert servers == {f"http://127.0.0.1:{w.port}" for w in workers}

            # a request one worker forwarded is never forwarded again: the
            # worker that does not own the title answers 503 (partitions moving)
            first = f"http://127.0.0.1:{workers[0].port}"
            for movie_id in totals:
                if (await get(workers[0], f"/api/titles/{movie_id}/"))[1]["served_by"] != first:
                    break  # a title the second worker owns
            async with http.get(f"http://127.0.0.1:{workers[0].port}/api/titles/{movie_id}/",
                                headers={"X-Streamapp-Forwarded-By": "http://elsewhere:1"}
                                ) as response:
                body = await response.json()
            assert response.status == 503 and body["store"] == "worker", body
    finally:
        for w in workers:
            w.stop()
        await drop_audit_indices(stores)
        await stores.close()
        for i in range(2):
            shutil.rmtree(f"{env['STREAMAPP_DATA_DIR']}-{i}", ignore_errors=True)
