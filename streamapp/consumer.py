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

Its commit rule itself stands: it commits the acknowledged run that starts
at the committed offset, or one past it (a transaction marker takes an
offset and is never delivered, so the next event may be the first one), and
agents process a partition in order, so once only processed events are
acknowledged, the run after the committed offset has no hole.

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
"""
from __future__ import annotations

import logging
from typing import Set

from aiokafka import TopicPartition
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

log = logging.getLogger(__name__)


class SafeAckConsumer(AIOKafkaConsumer):
    """aiokafka consumer whose commits never pass an unprocessed event."""

    #: Acknowledgements set aside because a rebalance made them untrustworthy.
    discarded_acks: int = 0
    _reported_discards: int = 0

    def _ack_counts(self, message: Message) -> bool:
        return (self.flow_active
                and message.generation_id == self.app.consumer_generation_id)

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

    async def perform_seek(self) -> None:
        await super().perform_seek()
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
