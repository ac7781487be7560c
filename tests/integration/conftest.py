import shutil

import pytest

from harness import Worker, reset_stores, settings_for, stores_for, web_port


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
    w = Worker(namespace, log, port=web_port()).start()
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="session")
async def clean_stores():
    """The session's own namespace (``tests/conftest.py``), emptied."""
    import os

    await reset_stores(dict(os.environ))


@pytest.fixture(scope="session")
async def app(clean_stores):
    """The module-level app with a live Kafka producer (dead letters and
    outcomes go to the real broker) and the memory table store, for the
    agents driven through ``test_context()``."""
    import agents.accounts
    import agents.catalog
    import agents.ratings
    import agents.sessions  # noqa: F401
    from streamapp.app import app as faust_app
    from streamapp.simulator.__main__ import ensure_topics

    faust_app.finalize()
    faust_app.flow_control.resume()
    await ensure_topics()
    await faust_app.producer.start()
    yield faust_app
    await faust_app.producer.stop()
    from streamapp.stores import stores
    await stores.close()
