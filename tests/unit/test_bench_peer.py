"""The benchmark's peer pass: its report keys, progress file and start line."""
import time
from datetime import datetime

from tests.system.bench.common import faust_ready_at, logged_at
from tests.system.bench.passthrough import read_progress
from tests.system.bench.report import add_ratios
from tests.system.peer_passthrough_app import ASSIGNED, Progress


def rates(name: str, *values):
    """A pass's rounds as the run names them: ``name_1``, ..., then ``name``."""
    keys = [f"{name}_{i}" for i in range(1, len(values))] + [name]
    return {k: {"events_per_s": v} if v is not None else {"error": "x"}
            for k, v in zip(keys, values)}


def test_ratio_vs_peer_is_the_median_pipeline_over_the_median_peer():
    results = {"passes": {**rates("passthrough", 10000.0, 11000.0, 12000.0),
                          **rates("peer_passthrough", 20000.0, 30000.0, 25000.0),
                          **rates("pipeline", 6000.0, 5000.0, 7000.0)}}
    add_ratios(results)
    assert results["peer_passthrough_events_per_s"] == 25000.0
    assert results["ratio_vs_peer_passthrough"] == 0.24  # 6000 / 25000
    assert results["ratio_vs_passthrough"] == 0.545
    assert results["rounds"]["peer_passthrough_events_per_s"] == [20000.0, 30000.0, 25000.0]
    assert results["rounds"]["ratio_vs_peer_passthrough_per_round"] == [0.3, 0.167, 0.28]


def test_no_peer_ratio_without_every_peer_round():
    results = {"passes": {**rates("passthrough", 10000.0, 11000.0),
                          **rates("peer_passthrough", None, 30000.0),
                          **rates("pipeline", 6000.0, 5000.0)}}
    add_ratios(results)
    assert results["peer_passthrough_events_per_s"] is None
    assert results["ratio_vs_peer_passthrough"] is None
    results = {"passes": rates("pipeline", 6000.0)}  # --passes without the peer
    add_ratios(results)
    assert results["ratio_vs_peer_passthrough"] is None


def test_progress_lines_read_as_the_pass_through_s(tmp_path):
    path = tmp_path / "progress"
    progress = Progress(str(path))
    for offset in range(3):
        progress("t", 0, offset)
    progress.flush()
    progress.flush()  # nothing new: no line
    progress("t", 1, 0)
    progress.stop()
    timeline = read_progress(path)
    assert [n for _, n in timeline] == [3, 4]
    assert timeline[-1][0] >= timeline[0][0]


def test_start_line_time_from_either_log_format(tmp_path):
    stamp = "2026-01-31 12:00:00,250"
    expected = time.mktime(datetime(2026, 1, 31, 12, 0, 0).timetuple()) + 0.25
    log = tmp_path / "log"
    log.write_text("a warning, not a log line\n"
                   f"[{stamp}] [INFO] [quixstreams] : {ASSIGNED}: 28 partitions\n")
    assert logged_at(log, ASSIGNED) == expected
    assert faust_ready_at(log) is None
    log.write_text(f"[{stamp}] [123] [INFO] [^Worker]: Ready \n")
    assert faust_ready_at(log) == expected
    assert logged_at(log, ASSIGNED) is None
    assert logged_at(tmp_path / "missing", ASSIGNED) is None
