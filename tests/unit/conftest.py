import pytest

from harness import reset_stores


@pytest.fixture(scope="session")
async def clean_stores():
    import os

    await reset_stores(dict(os.environ))


@pytest.fixture(scope="session")
async def app(clean_stores):
    """The module-level app with a live Kafka producer (dead letters and
    outcomes go to the real broker) and the memory table store."""
    from streamapp.app import app as faust_app
    from streamapp.simulator.__main__ import ensure_topics
    from streamapp.config import settings

    import agents.accounts, agents.catalog, agents.ratings, agents.sessions  # noqa: F401,E401
    faust_app.finalize()
    faust_app.flow_control.resume()
    await ensure_topics(settings.kafka_bootstrap)
    await faust_app.producer.start()
    yield faust_app
    await faust_app.producer.stop()
    from streamapp.stores import stores
    await stores.close()
