"""Users, subscriptions, payments and preferences → PostgreSQL.

One agent reads the four account topics together: their events touch the
same users, so each batch is one transaction (``write_accounts``) that
applies them in causal order, recorded once each in the ``applied_events``
ledger (see ``streamapp.stores.postgres``).
"""
from streamapp.app import app
from streamapp.config import settings
from streamapp.pipeline import handle_batch, stop_before_commit
from streamapp.stores import stores
from streamapp.topics import ACCOUNT_STREAMS, account_topics


@app.agent(account_topics)
async def accounts(stream):
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        with stop_before_commit("accounts"):
            await handle_batch("accounts", batch, [("postgres", stores.postgres.write_accounts)],
                               streams=ACCOUNT_STREAMS)
