"""Faust's Kafka consumer, committing only offsets whose events were processed.

faust-streaming 0.15.3 can commit past an event that no agent processed,
around a rebalance; ``make cluster-chaos`` lost one event per partition that
way (``worker_kill9``, ``scale_1_3_1``).  When a rebalance starts, Faust
stops the flow, clears the agents' buffers and lets each stream skip what it
still pulls (flow stopped, or fetched in an older generation), and it
*acknowledges* every skipped event.  The revocation has just forgotten each
partition's committed offset, so the consumer accepts those
acknowledgements at any offset and ``wait_empty`` commits them: the next
owner starts after an event nobody stored.

Its commit rule lets an acknowledged run start one past the committed
offset (a transaction marker takes an offset and is never delivered), which
also commits over one delivered event that was not acknowledged; here that
is allowed only when Kafka never delivered the committed offset
(``_new_offset``).

``SafeAckConsumer`` counts an acknowledgement only for an event fetched in
the current generation while the flow runs.  Everything else (skipped
events, and batches that finish during the rebalance) is left uncommitted:
every partition is read again from its committed offset after a rebalance,
so those events are processed again, and every write is idempotent.

That re-read needs the seek to happen, and for a partition the group never
committed it does not: aiokafka's ``seek_to_committed`` leaves a partition
without a committed offset (or at 0) where its fetcher is, and Faust has
already taken and dropped what was fetched there during the rebalance.  Two
workers starting on a backlog lost every event fetched that way (the
partitions then stood still until the next rebalance: ``make
bench-scaling``), and ``worker_kill9`` once lost the first 78 events of two
partitions.  ``perform_seek`` here moves such partitions to their first
offset, as ``consumer_auto_offset_reset="earliest"`` promises.

And the fetch loop must not move a partition's read offset past the seek.
Faust's loop awaits a commit between taking a message from a fetched batch
and delivering it; a rebalance finishing during that await has already
sought the partition back, yet the loop delivers the stale message (which
the stream skips) and records its offset as read, so the re-fetched events
up to it are dropped as already read: ``scale_1_3_1`` lost 7 consecutive
subscription events of a partition its worker kept.  The loop here is
Faust's, with a check before delivery that the message is of the current
generation (it waits while the streams resume after the seek: what it
fetched then is current, and dropping it lost the first events of a new
partition) and after it that no rebalance interrupted the delivery;
otherwise it abandons the batch.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Dict, List, Optional, Set, cast

import faust
from aiokafka import TopicPartition
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from faust.utils.functional import consecutive_numbers
from mode import Service
from mode.utils.futures import notify

log = logging.getLogger(__name__)

#: The faust-streaming version whose fetch loop and bookkeeping this adapts
#: (setup.cfg pins it).
FAUST_VERSION = "0.15.3"

#: How long a seek waits for the fetch loop to let go of its batch (it does
#: so at its next message once the flow stops).
SEEK_WAIT_S = 30.0


class SafeAckConsumer(AIOKafkaConsumer):
    """aiokafka consumer whose commits never pass an unprocessed event."""

    #: Acknowledgements set aside because a rebalance made them untrustworthy.
    discarded_acks: int = 0
    _reported_discards: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Per partition, the first offset delivered since its last seek.
        self._first_read: Dict[TP, int] = {}
        #: Set while the fetch loop holds no fetched message (between batches).
        self._drain_idle = asyncio.Event()
        self._drain_idle.set()
        #: A seek is under way: the fetch loop abandons what it holds.
        self._seek_pending = False

    def _flowing(self) -> bool:
        """The consumer and the streams both run (no rebalance or recovery on)."""
        return self.flow_active and self.app.flow_control.is_active()

    def _ack_counts(self, message: Message) -> bool:
        """Fetched in this generation, acknowledged while everything flows."""
        return self._flowing() and message.generation_id == self.app.consumer_generation_id

    async def _wait_current(self, message: Message) -> bool:
        """Wait until ``message`` may be delivered; False if it never may.

        Between the seek that ends a rebalance and the streams' resumption,
        the fetch loop already reads the sought partitions: those events are
        current and must wait, not be dropped (the fetcher has moved past
        them and no seek follows).  Events of an older generation were
        fetched before the seek that repositioned their partition: dropped.
        Changelog records (acks off) are for table recovery, which runs while
        the streams are suspended: never held.
        """
        generation = self.app.consumer_generation_id
        if message.generation_id != generation or self._seek_pending:
            return False
        if not self.app.topics.acks_enabled_for(message.topic):
            return True
        while not self._flowing():
            if (self.should_stop or self._seek_pending
                    or self.app.consumer_generation_id != generation):
                return False
            await asyncio.sleep(0.05)
        return True

    def ack(self, message: Message) -> bool:
        with ack_lock:
            if message.acked or self._ack_counts(message):
                return super().ack(message)
            # Read again after the rebalance's seek: done, but not committable.
            message.acked = True
            self._unacked_messages.discard(message)
            self.discarded_acks += 1
            notify(self._waiting_for_ack)
            return False

    async def on_partitions_assigned(self, assigned: Set[TP], generation_id: int = 0) -> None:
        new = self.discarded_acks - self._reported_discards
        if new:
            self._reported_discards = self.discarded_acks
            log.info("rebalance: %d acknowledgement(s) set aside; their events are read "
                     "again from the committed offsets", new)
        await super().on_partitions_assigned(assigned, generation_id)

    def _new_offset(self, tp: TP) -> Optional[int]:
        """Faust's, except where the acknowledged run may start.

        Faust commits a run that starts one past the committed offset, for
        the offset a transaction marker takes (never delivered).  That also
        commits over one event that *was* delivered and not acknowledged;
        ``scale_1_3_1`` lost single events of three partitions at a worker's
        shutdown.  Here the run may start one past only if the first event
        read since the last seek was that one: the committed offset never
        came from Kafka.  Otherwise the partition waits (the watchdog asks
        for a rebalance if it waits for good; the event is read again).
        """
        acked = self._acked[tp]
        if not acked:
            return None
        gaps = self._gap[tp]
        if gaps:  # offsets Kafka skipped count as acknowledged (Faust's rule)
            top = max(acked)
            spans = sorted(gaps.overlap(0, top), key=lambda span: span.begin)
            if spans:
                filled: List[int] = [o for span in spans for o in range(span.begin, span.end)]
                acked.extend(filled)
                gaps.chop(0, max(filled[-1], top + 1))
        acked.sort()
        committed = self._committed_offset[tp]
        if committed is not None and acked[0] > committed:
            if acked[0] > committed + 1 or self._first_read.get(tp) != committed + 1:
                return None
        run = next(consecutive_numbers(acked))
        del acked[: len(run)]
        self._acked_index[tp].difference_update(run)
        return run[-1] + 1

    async def on_partitions_revoked(self, revoked: Set[TP]) -> None:
        for tp in revoked:
            self._first_read.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def seek(self, partition: TP, offset: int) -> None:
        self._first_read.pop(partition, None)
        await super().seek(partition, offset)

    async def perform_seek(self) -> None:
        """Faust's seek to the committed offsets, with nothing delivered meanwhile.

        Faust can call this with the flow running: when a rebalance needs no
        table recovery it resumes the flow (and the newly assigned
        partitions) before it seeks, and the seek took 1.5 s on a busy
        machine.  Meanwhile the fetch loop delivered from the old positions
        and commits ran, while the seek moved the positions and reset the
        read and committed offsets.  After such a seek, partitions stood
        still with their commit 2 to 6 events short of their acknowledged
        head until the watchdog's rebalance (``test_cluster.py``).  So the
        flow stops, the fetch loop lets go of its batch (everything in it is
        at or past the committed offset, so the seek brings it back), the
        seek runs, and the flow resumes.
        """
        flowing = self.flow_active
        if flowing:
            self._seek_pending = True
            self.stop_flow()
            try:
                await asyncio.wait_for(self._drain_idle.wait(), SEEK_WAIT_S)
            except TimeoutError:
                log.warning("seek: the fetch loop still held a batch after %.0f s", SEEK_WAIT_S)
        try:
            await self._seek_to_committed()
        finally:
            if flowing:
                self._seek_pending = False
                self.resume_flow()

    async def _seek_to_committed(self) -> None:
        await super().perform_seek()
        self._first_read.clear()
        if self.app.conf.consumer_auto_offset_reset != "earliest":
            return
        never = [tp for tp in self.assignment()
                 if self._committed_offset.get(tp) is None and not self._is_changelog_tp(tp)
                 and self.app.topics.acks_enabled_for(tp.topic)]
        if never:
            await self._thread.seek_to_beginning(
                *(TopicPartition(tp.topic, tp.partition) for tp in never))
            for tp in never:
                self._read_offset[tp] = None

    def verify_event_path(self, now: float, tp: TP) -> None:
        """Faust's livelock check, for a partition whose fetch position is known.

        The check reads each assigned partition's position, which aiokafka
        asserts is set; a partition sent to its first offset by
        ``perform_seek``, or just assigned, has none until the reset
        completes, and the assertion crashed a worker left alone after the
        other's ``kill -9`` (``test_cluster.py``).  Such a partition has
        nothing to check yet: it is checked on the next round.
        """
        if self.fetch_position_known(tp):
            super().verify_event_path(now, tp)

    def fetch_position_known(self, tp: TP) -> bool:
        """Whether aiokafka holds a fetch position for ``tp`` (assigned, not resetting)."""
        consumer = self._thread._consumer
        subscription = consumer._subscription.subscription if consumer else None
        if subscription is None or subscription.assignment is None:
            return False
        state = subscription.assignment.state_value(TopicPartition(tp.topic, tp.partition))
        return state is not None and state.has_valid_position

    async def _deliver(self, callback: Any, message: Message) -> None:
        """Hand one message to the agents' buffers; a rebalance interrupts it."""
        await self.wait_first(callback(message), self.suspend_flow.wait())

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover
        # faust-streaming 0.15.3, faust/transport/consumer.py, with the
        # changes marked below.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        deliver = self._deliver
        wait_current = self._wait_current
        first_read = self._first_read
        drain_idle = self._drain_idle

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                drain_idle.set()  # changed: see perform_seek
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator, getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        drain_idle.clear()  # changed: see perform_seek
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
                            if not await wait_current(message):  # changed: stale
                                break
                            await deliver(callback, message)
                            if (message.generation_id != self.app.consumer_generation_id
                                    or not self.flow_active):  # changed: not delivered
                                break
                            first_read.setdefault(tp, offset)  # changed: see _new_offset
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
            drain_idle.set()
            unset_flag(flag_consumer_fetching)


def install(app: faust.App) -> bool:
    """Give ``app`` the ``SafeAckConsumer``, which adapts faust-streaming
    ``FAUST_VERSION``'s consumer; with another version Faust's own is kept
    and a warning says so.  Returns whether it was installed."""
    if faust.__version__ != FAUST_VERSION:
        log.warning("faust-streaming %s, not %s: keeping Faust's own consumer, without "
                    "streamapp.consumer's rebalance fixes", faust.__version__, FAUST_VERSION)
        return False
    app.transport.Consumer = SafeAckConsumer  # type: ignore[misc]  # Faust reads it per instance
    return True
