"""Users, subscriptions, payments and preferences → PostgreSQL."""
from streamapp.app import app
from streamapp.config import settings
from streamapp.pipeline import handle_batch, stop_before_commit
from streamapp.stores import stores
from streamapp.topics import payments_topic, preferences_topic, subscriptions_topic, users_topic

TO_POSTGRES = [("postgres", stores.postgres.write_accounts)]


@app.agent(users_topic)
async def users(stream):
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        with stop_before_commit("users"):
            await handle_batch("users", batch, TO_POSTGRES)


@app.agent(subscriptions_topic)
async def subscriptions(stream):
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        with stop_before_commit("subscriptions"):
            await handle_batch("subscriptions", batch, TO_POSTGRES)


@app.agent(payments_topic)
async def payments(stream):
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        with stop_before_commit("payments"):
            await handle_batch("payments", batch, TO_POSTGRES)


@app.agent(preferences_topic)
async def preferences(stream):
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        with stop_before_commit("preferences"):
            await handle_batch("preferences", batch, TO_POSTGRES)
