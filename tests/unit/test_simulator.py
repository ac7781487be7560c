"""The simulator is believable and reproducible: titles keep their identity,
popularity is long-tailed and drifts, subscriptions bill periodically until
cancelled, sessions beat and end, every event passes the codec, one seed
gives the same bytes, and a recording replays byte for byte."""
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from streamapp.codec import Rejection, decode
from streamapp.simulator.billing import BILLING_PERIOD_S, RETRY_S
from streamapp.simulator.catalog import DAY
from streamapp.simulator.profiles import PROFILES, intensity
from streamapp.simulator.replay import Replay
from streamapp.simulator.world import ABANDON_SHARE, HEARTBEAT_S, World

ROOT = Path(__file__).resolve().parents[2]
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
EDITABLE = {"synopsis", "artwork", "cast", "genres", "similar", "runtime_min"}


def run(count, **kw):
    """Decoded wire bodies of ``count`` events, with each one's world time."""
    kw.setdefault("epoch", EPOCH)
    world = World(kw.pop("seed", 11), kw.pop("users", 400), kw.pop("titles", 200), **kw)
    out = []
    for _, _, value, _, _ in world.events(count):
        body = orjson.loads(value)
        at = datetime.fromisoformat(body["occurred_at"])
        body["_t"] = (at - EPOCH).total_seconds() * world.speed
        out.append(body)
    return world, out


@pytest.fixture(scope="module")
def weeks():
    """About 17 world days, an hour of world time per second of event time."""
    return run(40_000, speed=3600)


@pytest.fixture(scope="module")
def hours():
    """About 3 world hours at the default speed: sessions start, beat and end."""
    return run(20_000, users=300, titles=100)


@pytest.fixture(scope="module")
def months():
    """12.5 world days, billed every 2 world days."""
    return run(30_000, users=150, titles=50, speed=3600, billing_period_s=2 * DAY)


# --- the catalog -----------------------------------------------------------------

def test_an_edit_changes_a_few_fields_never_the_identity(weeks):
    _, events = weeks
    versions = defaultdict(list)
    for e in events:
        if e["type"] == "title.upserted":
            versions[e["movie_id"]].append(e)
    edited = {m: v for m, v in versions.items() if len(v) > 1}
    assert len(edited) >= 20
    changed_counts = Counter()
    for movie, vs in edited.items():
        assert len({(v["title"], v["year"]) for v in vs}) == 1, movie
        for before, after in zip(vs, vs[1:]):
            changed = {k for k in EDITABLE if before[k] != after[k]}
            assert len(changed) <= 2, (movie, changed)
            changed_counts[len(changed)] += 1
            old_cast = [c["name"] for c in before["cast"]]
            assert [c["name"] for c in after["cast"]][:len(old_cast)] == old_cast
            assert 1 <= len(after["genres"]) <= 4
    assert changed_counts[0] < 0.1 * sum(changed_counts.values())  # edits do edit


def test_a_title_is_never_its_own_similar_title(weeks):
    _, events = weeks
    upserts = [e for e in events if e["type"] == "title.upserted"]
    for e in upserts:
        assert e["movie_id"] not in e["similar"]
        assert len(set(e["similar"])) == len(e["similar"]) <= 4
    known = {e["movie_id"] for e in upserts}
    assert {m for e in upserts for m in e["similar"]} <= known


def test_new_titles_are_released_and_watched(weeks):
    world, events = weeks
    first = {e["movie_id"]: e["_t"] for e in reversed(events) if e["type"] == "title.upserted"}
    new = [m for m in first if int(m[1:]) >= 200]
    assert len(new) >= 10 and len(world.titles) == 200 + len(new)
    assert all(first[m] > DAY / 10 for m in new)  # over time, not at the start
    assert max(int(e["year"]) for e in events if e["type"] == "title.upserted"
               and e["movie_id"] in new) == EPOCH.year
    views = Counter(e["movie_id"] for e in events if e["type"] == "session.started")
    assert sum(views[m] for m in new) > 0.1 * sum(views.values())


def test_popularity_has_a_long_tail(weeks):
    world, events = weeks
    for kind in ("session.started", "rating.submitted"):
        views = Counter(e["movie_id"] for e in events if e["type"] == kind)
        total = sum(views.values())
        head = sum(n for _, n in views.most_common(len(world.titles) // 10))
        assert 0.45 < head / total < 0.9, (kind, head / total)  # most, but not all
    rated = Counter(e["movie_id"] for e in events if e["type"] == "rating.submitted")
    assert len(rated) > 0.8 * len(world.titles)  # the tail is watched too


def test_the_top_titles_drift_over_world_time(weeks):
    _, events = weeks

    def top(lo_day, hi_day):
        views = Counter(e["movie_id"] for e in events
                        if e["type"] in ("session.started", "rating.submitted")
                        and lo_day * DAY <= e["_t"] < hi_day * DAY)
        return {m for m, _ in views.most_common(10)}
    early, late = top(0, 3), top(13, 16)
    assert len(early & late) <= 7, (early, late)
    assert any(int(m[1:]) >= 200 for m in late - early)  # a new release rose


# --- accounts and viewing ------------------------------------------------------

def test_subscriptions_bill_every_period_and_stop_when_cancelled(months):
    world, events = months
    attempts, cancelled, started = defaultdict(list), {}, {}
    for e in events:
        sid = e.get("subscription_id")
        if e["type"] == "subscription.started":
            started[sid] = e["_t"]
        elif e["type"].startswith("payment."):
            assert sid not in cancelled, "charged after cancellation"
            attempts[sid].append((e["_t"], e["type"]))
        elif e["type"] == "subscription.cancelled":
            cancelled[sid] = e["_t"]
    # slack: a charge is emitted when the clock has passed its due time,
    # behind other due events (an event is 36 world seconds here)
    period, slack = 2 * DAY, 3 * 3600
    assert len(cancelled) >= 20
    long_lived = 0
    for sid, tries in attempts.items():
        assert tries[0][0] - started[sid] < slack  # charged when it starts
        for (t0, kind), (t1, _) in zip(tries, tries[1:]):
            gap = period if kind == "payment.processed" else RETRY_S
            assert abs(t1 - t0 - gap) < slack, (sid, kind, t1 - t0)
        end = cancelled.get(sid, events[-1]["_t"])
        if end - started[sid] > 4 * period:
            long_lived += 1
            assert sum(k == "payment.processed" for _, k in tries) >= 3
    assert long_lived >= 20
    reasons = Counter(e["reason"] for e in events if e["type"] == "subscription.cancelled")
    assert reasons["payment_failed"] > 0 and reasons["price"] > 0
    users = [e["user_id"] for e in events if e["type"] == "subscription.started"]
    active = Counter(world.active_subs[s][0] for s in world.active_subs)
    assert max(active.values()) == 1 and len(users) > len(set(users))  # one at a time
    assert BILLING_PERIOD_S == 30 * DAY  # the default


def test_sessions_beat_every_30_world_seconds_and_end(hours):
    world, events = hours
    beats, ends, starts = defaultdict(list), {}, {}
    for e in events:
        sid = e.get("session_id")
        if e["type"] == "session.started":
            starts[sid] = e["_t"]
        elif e["type"] == "session.heartbeat":
            assert sid in starts and sid not in ends
            beats[sid].append((e["_t"], e["position_s"]))
        elif e["type"] == "session.ended":
            ends[sid] = e
    for sid, bs in beats.items():
        positions = [p for _, p in bs]
        assert positions == [int(HEARTBEAT_S) * (i + 1) for i in range(len(bs))], sid
        for (t0, _), (t1, _) in zip(bs, bs[1:]):
            assert HEARTBEAT_S - 2 <= t1 - t0 <= HEARTBEAT_S + 5
    for sid, e in ends.items():
        assert e["watched_s"] >= (beats[sid][-1][1] if beats[sid] else 0)
    finished = [s for s, t in starts.items() if s not in world.open_sessions]
    assert len(finished) > 150 and len(starts) - len(finished) == len(world.open_sessions)
    timed_out = [s for s in finished if s not in ends]  # no end: the stores time them out
    assert 0 < len(timed_out) < 3 * ABANDON_SHARE * len(finished)
    durations = sorted(e["watched_s"] for e in ends.values())
    assert 5 * 60 < durations[len(durations) // 2] < 30 * 60  # a median of minutes


def test_profiles_shape_the_traffic():
    assert all(intensity("steady", t) == 1.0 for t in (0, 3600, 86_400))
    daily = [intensity("daily", h * 3600.0) for h in range(24)]
    assert max(daily) / min(daily) > 3 and daily.index(max(daily)) in (20, 21)
    assert intensity("launch-spike", 3600 + 1800) > 2.5 > intensity("launch-spike", 3000)
    world, events = run(12_000, profile="launch-spike", titles=100)
    hits = Counter(e["movie_id"] for e in events
                   if e["type"] == "session.started" and e["_t"] > 3700)
    (leader, n), = hits.most_common(1)
    assert int(leader[1:]) >= 100 and n > 0.2 * sum(hits.values())  # the blockbuster


# --- the wire: codec, determinism, record and replay ------------------------------

@pytest.mark.parametrize("profile", PROFILES)
def test_every_event_of_every_profile_passes_the_codec(profile):
    world = World(5, 500, 150, bad_share=0.01, epoch=EPOCH, profile=profile)
    seen, bad = Counter(), 0
    for _, _, value, _, reason in world.events(30_000):
        event = decode(value)
        if reason is None:
            assert not isinstance(event, Rejection), (event, value)
            seen[event.TYPE] += 1
        else:
            assert isinstance(event, Rejection) and event.code == reason
            bad += 1
    assert len(seen) == 14 and bad > 100


def simulate(tmp_path, name, *args):
    out = tmp_path / name
    subprocess.run([sys.executable, "-m", "streamapp.simulator", "--dry-run", "--quiet",
                    "--record", str(out), *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return out.read_bytes()


def test_one_seed_gives_the_same_bytes(tmp_path):
    args = ("--count", "4000", "--epoch", "2026-01-01T00:00:00+00:00", "--bad-share", "0.01",
            "--profile", "daily", "--users", "300", "--titles", "80")
    first = simulate(tmp_path, "a.jsonl", "--seed", "9", *args)
    assert first == simulate(tmp_path, "b.jsonl", "--seed", "9", *args)
    assert first != simulate(tmp_path, "c.jsonl", "--seed", "10", *args)
    assert first.count(b"\n") == 4000


def test_a_recording_replays_byte_for_byte(tmp_path):
    recorded = simulate(tmp_path, "rec.jsonl", "--count", "3000", "--seed", "4", "--epoch",
                        "2026-01-01T00:00:00+00:00", "--bad-share", "0.02")
    replayed = simulate(tmp_path, "again.jsonl", "--replay", str(tmp_path / "rec.jsonl"))
    assert replayed == recorded
    # and the records a replay produces are the world's: topic, key, value, timestamp
    world = World(4, 2000, 500, bad_share=0.02, epoch=EPOCH)
    with open(tmp_path / "rec.jsonl", "rb") as fh:
        replay = Replay(fh)
        pairs = list(zip(world.events(3000), replay.events(0)))
    assert len(pairs) == 3000
    for ours, theirs in pairs:
        if ours[4] is None:
            assert ours == theirs
        else:
            assert (ours[0], ours[2], ours[4]) == (theirs[0], theirs[2], theirs[4])
    assert replay.summary()["expect"] == world.summary()["expect"]
