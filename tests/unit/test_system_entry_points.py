"""The system runs (make soak, chaos, bench, ...) are not part of the suite,
so a refactor once broke ``make soak`` at import unnoticed.  Each entry
point must at least import and, where it has options, print its help."""
import importlib
import subprocess
import sys

import pytest

from harness import ROOT

ENTRY_POINTS = ["bench", "chaos", "cluster_chaos", "memprobe", "mongo_candidates", "scaling", "soak"]
WITH_OPTIONS = ["bench", "mongo_candidates", "scaling", "soak"]


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_entry_point_imports(name):
    importlib.import_module(f"tests.system.{name}")


@pytest.mark.parametrize("name", WITH_OPTIONS)
def test_entry_point_prints_its_help(name):
    result = subprocess.run([sys.executable, "-m", f"tests.system.{name}", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
