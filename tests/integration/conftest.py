import os
import shutil

import pytest

from harness import Worker, reset_stores, stores_for, settings_for


@pytest.fixture(scope="module")
async def namespace():
    """A fresh, empty corner of every store for one test module."""
    from harness import isolated_env

    env = isolated_env()
    env["TABLE_STORE"] = "rocksdb://"
    await reset_stores(env)
    yield env
    shutil.rmtree(env["STREAMAPP_DATA_DIR"], ignore_errors=True)


@pytest.fixture(scope="module")
async def stores(namespace):
    s = stores_for(namespace)
    yield s
    await s.close()


@pytest.fixture(scope="module")
def cfg(namespace):
    return settings_for(namespace)


@pytest.fixture(scope="module")
def worker(namespace, tmp_path_factory):
    """A real ``faust -A streamapp worker`` for the module."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    w = Worker(namespace, log, port=int(os.environ.get("TEST_WEB_PORT", "6071"))).start()
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()
