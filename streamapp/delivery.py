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
own ``Consumer._drain_messages`` of faust-streaming 0.15.3 with that one
call changed; other versions keep Faust's loop (``install``).

Opt-in (``EAGER_DELIVERY=true``): the pipeline and the pass-through drain
more events a second with it.  But the chaos scenario ``kill9_x3`` stalled
in some runs with it on and in none without (bench/README.md, "Eager
delivery"): the worker restarted after the third kill became ready and no
event ever reached its streams.  It stays off until that is explained.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Coroutine, Optional, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from mode import Service

from .config import Settings

log = logging.getLogger(__name__)

#: The faust-streaming version whose fetch loop ``_drain_messages`` copies.
FAUST_VERSION = "0.15.3"


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


class EagerDeliveryConsumer(AIOKafkaConsumer):
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

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover
        # faust-streaming 0.15.3, faust/transport/consumer.py, with one change
        # marked below.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        deliver = self._deliver

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator, getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None:
                                if self._n_acked >= commit_every:
                                    self._n_acked = 0
                                    await self.commit()
                            # The change: Faust awaits
                            # ``self.wait_first(callback(message), self.suspend_flow.wait())``.
                            await deliver(callback, message)
                            set_read_offset(tp, offset)
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


def install(app: faust.App, cfg: Settings) -> bool:
    """Use ``EagerDeliveryConsumer`` for ``app`` if ``EAGER_DELIVERY`` asks for
    it and this is the Faust whose loop it copies."""
    if not cfg.eager_delivery:
        return False
    if faust.__version__ != FAUST_VERSION:
        log.warning("faust-streaming %s, not %s: keeping Faust's own fetch loop",
                    faust.__version__, FAUST_VERSION)
        return False
    app.transport.Consumer = EagerDeliveryConsumer  # type: ignore[misc]  # Faust reads it per instance
    return True
