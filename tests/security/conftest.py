"""A real worker per security test module, with two known people in
PostgreSQL (``secure_worker.VICTIM`` and ``OTHER``).

Each module says how its worker is configured through a ``worker_env``
fixture (database, Redis database, extra environment) and gets its own
PostgreSQL and MongoDB database, Redis database and worker log.
"""
from __future__ import annotations

import asyncio
import shutil
from typing import AsyncIterator

import aiohttp
import pytest

from harness import Worker, isolated_env, reset_stores
from secure_worker import SecureWorker, free_port, seed_people


@pytest.fixture(scope="module")
async def secure_worker(worker_env, tmp_path_factory) -> AsyncIterator[SecureWorker]:
    """A worker started with ``isolated_env()`` plus the module's ``worker_env``."""
    database, redis_db, extra = worker_env
    env = {**isolated_env(database=database, redis_db=redis_db), **extra}
    await reset_stores(env)
    await seed_people(env)
    port = free_port()
    log_path = tmp_path_factory.mktemp("security") / "worker.log"
    worker = Worker(env, log_path, port=port)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
    try:
        worker.start()
        await asyncio.to_thread(worker.wait_ready, 60)
        yield SecureWorker(f"http://127.0.0.1:{port}", port, env, worker, http, log_path)
    finally:
        await http.close()
        worker.stop()
        shutil.rmtree(env["STREAMAPP_DATA_DIR"], ignore_errors=True)
