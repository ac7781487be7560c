"""Test-wide setup: every test session runs in its own namespace of the real
stack, named after its session tag (see ``tests/harness.py``).  The environment is set before anything
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
    """Drop every namespace the session made (topics, changelogs, Redis keys,
    audit indices) and its databases; nothing when no test used the stack."""
    import asyncio

    from harness import CREATED, DATABASES, USED_STACK, drop_databases, drop_namespaces

    if USED_STACK[0]:
        asyncio.run(drop_namespaces(CREATED))
        asyncio.run(drop_databases(sorted(DATABASES)))
