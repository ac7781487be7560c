"""A recorded run of the simulator, replayed into the real pipeline: the
stores hold exactly what the recording says, titles under the names they
were first given (edits never renamed them), in their newest edit, and
subscriptions in the state their last event left them."""
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from harness import ROOT, expected_vs_tally, simulate, wait_until
from streamapp.codec import Rejection, decode
from streamapp.tally import tally

pytestmark = pytest.mark.integration

COUNT = 6000


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A daily-profile run with bad records, recorded without Kafka."""
    path = tmp_path_factory.mktemp("rec") / "run.jsonl"
    epoch = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(microsecond=0)
    subprocess.run([sys.executable, "-m", "streamapp.simulator", "--dry-run", "--quiet",
                    "--record", str(path), "--count", str(COUNT), "--seed", "21",
                    "--users", "300", "--titles", "120", "--profile", "daily",
                    "--speed", "3600", "--bad-share", "0.01", "--epoch", epoch.isoformat()],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return path


@pytest.fixture(scope="module")
async def replayed(worker, namespace, stores, cfg, recording, tmp_path_factory):
    summary = simulate(namespace, "--replay", str(recording),
                       summary=tmp_path_factory.mktemp("sim") / "summary.json")

    async def landed():
        return not expected_vs_tally(summary, await tally(stores, cfg))
    ok = await wait_until(landed, timeout=300, interval=2)
    assert ok, expected_vs_tally(summary, await tally(stores, cfg))
    return summary


def wire(recording):
    """The recording's valid events, as wire bodies (the bad ones were dead-lettered)."""
    return [orjson.loads(line) for line in recording.read_bytes().splitlines()
            if not isinstance(decode(line), Rejection)]


async def test_the_stores_hold_what_the_recording_says(replayed, recording, stores, cfg):
    assert replayed["replay"] == {"lines": COUNT, "unroutable": 0}
    assert replayed["events"] == COUNT and replayed["expect"]["deadletter"] > 0
    counts = await tally(stores, cfg)
    assert counts["postgres"]["ratings"] == replayed["expect"]["postgres"]["ratings"] > 0
    assert counts["postgres"]["payments"] == replayed["expect"]["postgres"]["payments"] > 0
    assert counts["redis"]["session.ended"] == replayed["per_type"]["session.ended"] > 0


async def test_titles_keep_their_names_and_hold_their_newest_edit(replayed, recording,
                                                                  stores):
    first, last = {}, {}
    for e in wire(recording):
        if e["type"] == "title.upserted":
            first.setdefault(e["movie_id"], e)
            last[e["movie_id"]] = e
    assert len(first) > 120  # new titles were released during the run
    edited = [m for m in first if first[m] is not last[m]]
    assert len(edited) >= 10
    movies = await stores.mongo.movies()
    docs = {d["_id"]: d for d in await movies.find(
        {}, {"title": 1, "year": 1, "synopsis": 1, "similar": 1, "artwork": 1}).to_list(None)}
    assert set(docs) == set(first)
    for movie, doc in docs.items():
        assert (doc["title"], doc["year"]) == (first[movie]["title"], first[movie]["year"])
        assert doc["synopsis"] == last[movie]["synopsis"]
        assert [a["url"] for a in doc["artwork"]] == [a["url"] for a in last[movie]["artwork"]]
        assert movie not in doc["similar"]


async def test_subscriptions_end_in_their_last_state(replayed, recording, stores):
    status, charged_after_cancel = {}, []
    for e in wire(recording):
        sid = e.get("subscription_id")
        if e["type"] == "subscription.started":
            status[sid] = "active"
        elif e["type"] == "subscription.cancelled":
            status[sid] = "cancelled"
        elif e["type"].startswith("payment.") and status.get(sid) == "cancelled":
            charged_after_cancel.append(sid)
    assert not charged_after_cancel and "cancelled" in status.values()
    pool = await stores.postgres.pool()
    rows = {r["subscription_id"]: r["status"] for r in await pool.fetch(
        "SELECT subscription_id, status FROM subscriptions")}
    assert rows == status
