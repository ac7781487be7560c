"""Users, subscriptions, payments and preferences → PostgreSQL.

One agent per topic, all with the same job: the four streams share the
``applied_events`` ledger and one transaction per batch (see
``streamapp.stores.postgres``).
"""
from streamapp.app import app
from streamapp.config import settings
from streamapp.pipeline import handle_batch, stop_before_commit
from streamapp.stores import stores
from streamapp.topics import payments_topic, preferences_topic, subscriptions_topic, users_topic

TO_POSTGRES = [("postgres", stores.postgres.write_accounts)]


def _to_postgres(stream_name: str, topic):
    async def agent(stream):
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            with stop_before_commit(stream_name):
                await handle_batch(stream_name, batch, TO_POSTGRES)

    agent.__name__ = agent.__qualname__ = stream_name
    return app.agent(topic, name=f"{__name__}.{stream_name}")(agent)


users = _to_postgres("users", users_topic)
subscriptions = _to_postgres("subscriptions", subscriptions_topic)
payments = _to_postgres("payments", payments_topic)
preferences = _to_postgres("preferences", preferences_topic)
