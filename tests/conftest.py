"""Test-wide setup: every test session runs in its own namespace of the real
stack, named after its session tag (see ``tests/harness.py``).  The environment is set before anything
imports ``streamapp``, because settings are read once at import."""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import isolated_env  # noqa: E402

SESSION_ENV = isolated_env()
os.environ.update(SESSION_ENV)
os.environ.setdefault("TABLE_STORE", "memory://")  # unit tests; workers get rocksdb below


def pytest_sessionfinish(session, exitstatus):
    """Drop every namespace the session made (topics, changelogs, Redis keys,
    audit indices) and its databases; nothing when no test used the stack.
    ``TEST_KEEP_NAMESPACES=1`` keeps them, to look into after a failure."""
    import asyncio

    from harness import CREATED, DATABASES, USED_STACK, drop_databases, drop_namespaces

    if USED_STACK[0] and os.environ.get("TEST_KEEP_NAMESPACES"):
        print(f"\nkept the namespaces {', '.join(CREATED)} and databases {', '.join(sorted(DATABASES))}")
    elif USED_STACK[0]:
        asyncio.run(drop_namespaces(CREATED))
        asyncio.run(drop_databases(sorted(DATABASES)))


#: Where each test module's workers start in ``harness.STARTED``.
_MODULE_FIRST_WORKER: dict = {}


def pytest_runtest_setup(item):
    from harness import STARTED

    _MODULE_FIRST_WORKER.setdefault(item.module.__name__, len(STARTED))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test's report quotes its module's worker logs (their
    warnings, rebalances, watchdog lines): on a CI machine they are the only
    trace of what the workers saw."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    from harness import STARTED

    for worker in STARTED[_MODULE_FIRST_WORKER.get(item.module.__name__, 0):]:
        report.sections.append((f"notable lines of {worker.log_path.name} (port {worker.port})",
                                worker.notable()))
