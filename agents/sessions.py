"""Viewing sessions → Redis (session hashes, "now watching", most watched)."""
from streamapp.app import app
from streamapp.config import settings
from streamapp.pipeline import handle_batch, stop_before_commit
from streamapp.stores import stores
from streamapp.topics import sessions_topic


@app.agent(sessions_topic)
async def sessions(stream):
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        with stop_before_commit("sessions"):
            await handle_batch("sessions", batch, [("redis", stores.redis.write_sessions)])


@app.timer(interval=60.0)
async def prune_silent_sessions():
    """Sessions whose player vanished without an ``ended`` event stop counting."""
    await stores.redis.prune_watching()
