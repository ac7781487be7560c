"""The benchmark's peer pass: its report keys, progress file and start line."""
import time
from datetime import datetime

from tests.system.bench import read_progress
from tests.system.peer import logged_at, median_rate, peer_keys
from tests.system.peer_passthrough_app import ASSIGNED, Progress


def test_median_over_the_rounds_of_the_pass_only():
    passes = {"peer_passthrough_1": {"events_per_s": 9000.0},
              "peer_passthrough_2": {"events_per_s": 12000.0},
              "peer_passthrough": {"events_per_s": 10000.0},
              "passthrough": {"events_per_s": 1.0}, "pipeline": {"events_per_s": 2.0}}
    assert median_rate(passes, "peer_passthrough") == 10000.0
    assert median_rate(passes, "passthrough") == 1.0


def test_a_failed_round_leaves_the_median_out():
    passes = {"peer_passthrough_1": {"error": "TimeoutError"},
              "peer_passthrough": {"events_per_s": 10000.0}}
    assert median_rate(passes, "peer_passthrough") is None
    assert median_rate({}, "peer_passthrough") is None


def test_ratio_is_the_full_pipeline_over_the_peer():
    passes = {"peer_passthrough": {"events_per_s": 8000.0}}
    assert peer_keys(passes, 6000.0) == {"peer_passthrough_events_per_s": 8000.0,
                                         "ratio_vs_peer_passthrough": 0.75}
    assert peer_keys(passes, None)["ratio_vs_peer_passthrough"] is None
    assert peer_keys({}, 6000.0) == {"peer_passthrough_events_per_s": None,
                                     "ratio_vs_peer_passthrough": None}


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
    log.write_text("warning: not a log line\n"
                   f"[{stamp}] [INFO] [quixstreams] : {ASSIGNED}: 28 partitions\n")
    assert logged_at(log, ASSIGNED) == expected
    log.write_text(f"[{stamp}] [123] [INFO] [^Worker]: Ready \n")
    assert logged_at(log, "Worker]: Ready") == expected
    assert logged_at(log, ASSIGNED) is None
    assert logged_at(tmp_path / "missing", ASSIGNED) is None
