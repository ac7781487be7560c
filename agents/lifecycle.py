"""Open the store clients before the worker reports Ready; close them when it stops."""
import asyncio
import logging

import mode

from streamapp.app import app
from streamapp.deployment import HEARTBEAT_S, deployment
from streamapp.stores import stores

log = logging.getLogger(__name__)

#: How long start-up waits for a store before leaving it to the agents' retries.
WARM_UP_S = 10.0


@app.service
class StoreClients(mode.Service):
    """Started with the worker; stopping it closes every store client.

    Starting connects to PostgreSQL (and applies its migrations), MongoDB (and
    creates its indexes) and Redis, so that the first batch after Ready does
    not pay for it.  A store that is down at start-up does not hold the worker
    back: its client connects lazily on the first write, which retries with
    backoff like any other outage.

    Faust stops it after the fetcher, so no new batch starts.  A batch still
    being written then either finishes on a client that reconnects lazily or
    is cancelled uncommitted and replayed at the next start (every write is
    idempotent).
    """

    async def on_start(self) -> None:
        warm = stores.required()
        results = await asyncio.gather(*(asyncio.wait_for(store.connect(), WARM_UP_S)
                                         for store in warm), return_exceptions=True)
        for store, result in zip(warm, results):
            if isinstance(result, BaseException):
                log.warning("%s not reachable at start-up (%s: %s); its first write will retry",
                            store.name, type(result).__name__, result)

    async def on_stop(self) -> None:
        try:
            await asyncio.wait_for(deployment.leave(_url()), WARM_UP_S)
        except Exception as exc:  # stale entries age out anyway
            log.info("could not remove this worker's heartbeat: %s", exc)
        await deployment.close()
        await stores.close()


def _url() -> str:
    return str(app.conf.canonical_url)


@app.timer(interval=HEARTBEAT_S)
async def heartbeat() -> None:
    """Tell the other workers' views that this one is alive, and what it owns."""
    assigned: dict = {}
    for tp in sorted(app.assignor.assigned_actives()):
        assigned.setdefault(tp.topic, []).append(tp.partition)
    try:
        await deployment.beat(_url(), assigned)
    except Exception as exc:  # Redis down: the views show this worker as gone
        log.warning("heartbeat not written: %s: %s", type(exc).__name__, exc)
