"""``latest.png``: throughput of every pass over time, and the latency pass's latency."""
from __future__ import annotations

from pathlib import Path

from tests.system.bench.common import LATENCY_TARGET_S


def draw(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8.5))
    draw_throughput(top, results)
    draw_latency(bottom, results)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_throughput(top, results: dict) -> None:
    """Events done per second of each pass, on a log scale."""
    labels = {"ceiling": "1 ceiling (bare aiokafka)", "passthrough": "2 Faust pass-through",
              "peer_passthrough": "peer: Quix Streams pass-through (JSON decode, produce)",
              "pipeline": "3 full pipeline", "per_event": "4 full pipeline, BATCH_SIZE=1"}
    for name, label in labels.items():
        p = results["passes"].get(name) or {}
        series = p.get("throughput_per_s") or []
        if series:
            xs = [s[0] + 0.5 for s in series]
            ys = [max(s[1], 1.0) for s in series]
            rate_txt = f" ({p['events_per_s']:.0f}/s)" if p.get("events_per_s") else ""
            top.plot(xs, ys, marker=".", label=label + rate_txt)
    top.set_yscale("log")
    top.set_xlabel("seconds since the consumer could read (assignment / worker Ready)")
    top.set_ylabel("events done per 1 s bucket (log; 0 drawn as 1)")
    top.set_title(f"Throughput, same {results['events']['count']} events "
                  f"(seed {results['events']['seed']})")
    top.grid(True, which="both", alpha=0.3)
    top.legend(fontsize=8)


def draw_latency(bottom, results: dict) -> None:
    """Every event's latency in the latency pass, its p50 and p99 per second."""
    lat = results["passes"].get("latency_at_half_rate") or {}
    over_time = lat.get("_points") or {}
    everything = over_time.get("all_events_last_store") or []
    accounts = over_time.get("account_events_postgres") or []
    if everything or accounts:
        if everything:
            draw_every_event(bottom, everything)
        if accounts:
            bottom.scatter([p[0] for p in accounts], [p[1] for p in accounts], s=6,
                           marker="x", color="tab:orange", alpha=0.6,
                           label="account events: applied_at - occurred_at (PostgreSQL)")
        bottom.axhline(LATENCY_TARGET_S, color="black", linestyle="--", linewidth=1,
                       label=f"target p99 < {LATENCY_TARGET_S * 1000:.0f} ms")
        bottom.set_title(f"Full pipeline latency at {lat.get('produced_events_per_s')} events/s"
                         f" (about half its sustained rate)")
    else:
        bottom.set_title("Full pipeline latency: not measured")
    bottom.set_xlabel("seconds since the latency pass started (by occurred_at)")
    bottom.set_ylabel("seconds")
    bottom.grid(True, alpha=0.3)
    bottom.legend(fontsize=8)


def draw_every_event(bottom, everything: list) -> None:
    import numpy as np

    xs = np.array([p[0] for p in everything])
    ys = np.array([p[1] for p in everything])
    bottom.scatter(xs, ys, s=3, alpha=0.25, color="tab:blue",
                   label="each event: occurred_at -> outcome of its last store")
    buckets = np.floor(xs).astype(int)
    centers, p50, p99 = [], [], []
    for b in sorted(set(buckets.tolist())):
        sel = ys[buckets == b]
        centers.append(b + 0.5)
        p50.append(np.percentile(sel, 50))
        p99.append(np.percentile(sel, 99))
    bottom.plot(centers, p50, color="tab:green", label="all events, p50 per 1 s")
    bottom.plot(centers, p99, color="tab:red", label="all events, p99 per 1 s")
