"""The benchmark's verdicts: its five targets, and the MongoDB comparison's summary."""
import asyncio

from tests.system.bench import mongo_compare
from tests.system.bench.report import add_targets

#: Each target by the start of its name in the JSON.
SHORT = {"ratio_vs_passthrough >=": "median", "every round's": "rounds",
         "ratio_vs_per_event >=": "per_event", "every kind's": "kinds", "p99": "p99"}


def verdicts(results):
    add_targets(results)
    return {next(v for k, v in SHORT.items() if name.startswith(k)): t["met"]
            for name, t in results["targets"].items()}


def results_with(per_round, by_kind, p99, overall=0.85, per_event=12.5):
    return {"passes": {"latency_at_half_rate": {"latency_s": {"p99": p99}}},
            "ratio_vs_passthrough": overall, "ratio_vs_per_event": per_event,
            "rounds": {"ratio_vs_passthrough_per_round": per_round},
            "ratio_vs_per_event_by_kind": by_kind}


KINDS_OK = {"accounts": 12.0, "ratings": 13.0, "sessions": 6.0, "titles": 5.0}


def test_every_target_met_at_its_bounds():
    found = verdicts(results_with([0.7, 0.9, 0.85], KINDS_OK, 0.249, 0.8, 12.0))
    assert len(found) == 5 and all(found.values()), found


def test_one_round_below_0_7_misses_even_with_a_good_median():
    found = verdicts(results_with([0.69, 0.9, 0.85], KINDS_OK, 0.2))
    assert found["rounds"] is False
    assert found["median"] is True


def test_one_kind_below_5_misses_and_a_missing_kind_is_not_met():
    found = verdicts(results_with([0.9], {**KINDS_OK, "titles": 4.99}, 0.2))
    assert found["kinds"] is False
    found = verdicts(results_with([0.9], {**KINDS_OK, "titles": None}, 0.2))
    assert found["kinds"] is False


def test_p99_at_250_ms_misses():
    assert verdicts(results_with([0.9], KINDS_OK, 0.25))["p99"] is False


def test_comparison_rounds_and_medians_on_the_stack_server(monkeypatch, tmp_path):
    """Without starting anything: the stack's server is the only one named, so
    this holds the rounds, medians and title rate, not the alternation."""
    calls = []

    async def info(url):
        return {"version": "7.0", "ferretdbVersion": "v1"}

    async def reset(env):
        calls.append(("reset", env["MONGODB_URL"]))

    async def titles(env):
        return {"events_per_s": 150.0}

    async def pipeline_round(name, env):
        calls.append(("round", name))
        return {"events_per_s": {0: 2000.0, 1: 1800.0, 2: 2400.0}[int(name[-1])],
                "all_durable": True, "ignored": 1}

    monkeypatch.setattr(mongo_compare, "server_info", info)
    monkeypatch.setattr(mongo_compare, "reset_stores", reset)
    monkeypatch.setattr(mongo_compare, "pass_mongo_titles", titles)
    base = {"MONGODB_URL": "mongodb://127.0.0.1:1/streamapp_bench"}
    out = asyncio.run(mongo_compare.compare_mongodb(base, ["ferretdb"], 3, tmp_path,
                                                    pipeline_round))
    assert out["stack_server"] == "ferretdb"
    entry = out["servers"]["ferretdb"]
    assert entry["median_pipeline_events_per_s"] == 2000.0
    assert entry["title_upserts_per_s"] == 150.0
    assert "ignored" not in entry["rounds"][0]
    assert [c for c in calls if c[0] == "round"] == [
        ("round", f"mongodb_ferretdb_{i}") for i in range(3)]
    assert mongo_compare.flavour_of({"secantusVersion": "0.5"}) == "secantus"
    assert mongo_compare.flavour_of({"version": "7.0.14"}) == "mongod"
