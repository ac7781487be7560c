"""Test-wide setup: every test session runs in its own namespace of the real
stack (see ``tests/harness.py``).  The environment is set before anything
imports ``streamapp``, because settings are read once at import."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import isolated_env  # noqa: E402

SESSION_ENV = isolated_env()
os.environ.update(SESSION_ENV)
os.environ.setdefault("TABLE_STORE", "memory://")  # unit tests; workers get rocksdb below


def pytest_sessionfinish(session, exitstatus):
    """Drop every namespace the session made (topics, changelogs, audit indices)."""
    import asyncio

    from harness import CREATED, drop_namespaces

    asyncio.run(drop_namespaces(CREATED))
