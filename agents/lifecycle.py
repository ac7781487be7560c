"""Close the store clients when the worker stops (pools, sessions, sockets)."""
import mode

from streamapp.app import app
from streamapp.stores import stores


@app.service
class StoreClients(mode.Service):
    """Started with the worker; stopping it closes every store client.

    Faust stops it after the fetcher, so no new batch starts.  A batch still
    being written then either finishes on a client that reconnects lazily or
    is cancelled uncommitted and replayed at the next start (every write is
    idempotent).
    """

    async def on_stop(self) -> None:
        await stores.close()
