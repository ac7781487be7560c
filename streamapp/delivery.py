"""Faust's fetch loop, delivering each message without four tasks.

Faust hands every fetched message to the agents' buffers with
``Service.wait_first(callback(message), suspend_flow.wait())``, so that a
rebalance can interrupt a delivery that waits (on a full buffer, on flow
control, on the producer's buffer).  ``wait_first`` creates four tasks and an
``asyncio.wait`` for each message: a large share of the worker's CPU, where
the delivery itself almost never waits (see bench/README.md, "Eager
delivery").

``EagerDeliveryConsumer`` runs the delivery inline up to its first wait.  If
it finishes there (the common case) nothing else is needed: no other task
could have run, exactly as if ``wait_first`` had seen it finish first.  If
it has to wait, the rest of it runs under ``wait_first`` as before (through
``finish``), so a rebalance interrupts it the same way.  The loop is Faust's
fetch loop of ``streamapp.consumer.SafeAckConsumer`` (Faust's, made safe
around rebalances) with that one call changed; other Faust versions keep
``SafeAckConsumer`` as it is (``install``).

Opt-in (``EAGER_DELIVERY=true``): the pipeline and the pass-through drain
more events a second with it.  But the chaos scenario ``kill9_x3`` stalled
in some runs with it on and in none without (bench/README.md, "Eager
delivery"): the worker restarted after the third kill became ready and no
event ever reached its streams.  It stays off until that is explained.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine, Optional

import faust

from .config import Settings
from .consumer import FAUST_VERSION, SafeAckConsumer

log = logging.getLogger(__name__)


async def finish(coro: Coroutine, yielded: Optional[asyncio.Future]) -> Any:
    """Run a coroutine that has already been stepped once to its end.

    ``yielded`` is what its first step yielded: the future it waits for, or
    ``None`` for a bare yield (``asyncio.sleep(0)``).  Each later step happens
    once that future is done, as a Task would do it; the coroutine reads the
    future's result or exception itself.  If this task is cancelled while
    waiting, asyncio cancels the future it waits on, and the coroutine sees
    that cancellation at its own ``await``.
    """
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            elif not yielded.done():
                await asyncio.wait([yielded])  # does not raise what the future holds
        except asyncio.CancelledError:
            if yielded is not None:
                yielded.cancel()
            try:
                yielded = coro.throw(asyncio.CancelledError())
            except StopIteration as done:
                return done.value
            continue
        try:
            yielded = coro.send(None)
        except StopIteration as done:
            return done.value


class EagerDeliveryConsumer(SafeAckConsumer):
    """Faust's aiokafka consumer, delivering inline when nothing waits."""

    async def _deliver(self, callback: Any, message: Any) -> None:
        delivery = callback(message)
        if self.suspend_flow.is_set():  # a rebalance is on: Faust's way
            await self.wait_first(delivery, self.suspend_flow.wait())
            return
        try:
            yielded = delivery.send(None)
        except StopIteration:
            return
        await self.wait_first(finish(delivery, yielded), self.suspend_flow.wait())


def install(app: faust.App, cfg: Settings) -> bool:
    """Give ``app`` our consumer: ``SafeAckConsumer``, or ``EagerDeliveryConsumer``
    if ``EAGER_DELIVERY`` asks for it.  Both adapt faust-streaming
    ``FAUST_VERSION``'s consumer; with another version Faust's own is kept
    (and a warning says so).  Returns whether delivery is eager."""
    if faust.__version__ != FAUST_VERSION:
        log.warning("faust-streaming %s, not %s: keeping Faust's own consumer, without "
                    "streamapp.consumer's rebalance fixes", faust.__version__, FAUST_VERSION)
        return False
    # Faust reads it per instance
    app.transport.Consumer = (  # type: ignore[misc]
        EagerDeliveryConsumer if cfg.eager_delivery else SafeAckConsumer)
    return cfg.eager_delivery
