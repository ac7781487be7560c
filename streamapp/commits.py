"""Faust's consumer, but it never commits past an offset that was not acknowledged.

Faust commits, per partition, the longest run of acknowledged offsets that
follows the committed one.  faust-streaming 0.15.3 checks that the run starts
right there with ``min(acked) - committed > 1``; with ``committed`` being the
*next* offset to read, a run that starts one later passes, and the offset in
between is committed without ever having been processed.

That offset is exactly what a rebalance can drop: the fetch loop drops the
message it holds while the flow is suspended, yet records it as read; after
the seek to the committed offset it may deliver one more message of its old
batch, which moves the read offset past the committed one, so the re-fetched
committed message is dropped as already read.  ``make cluster-chaos``'s
``scale_1_3_1`` lost one account event in each of 13 partitions that way.

Here a run must start at the committed offset, and a partition the group
never committed counts as committed at its first offset (Faust leaves it
unknown and so commits any run; ``worker_kill9`` lost the first 78
preference events of two partitions that were assigned only after a
rebalance).  A partition whose committed
message was dropped then stops committing (what follows is processed, and
replayed later; every write is idempotent) until the next rebalance seeks it
again; ``agents.watchdog`` asks for that rebalance when a partition's
commits stand still behind its end.  Gaps Faust recorded (offsets a
transactional producer's markers take) still count as acknowledged.
"""
from __future__ import annotations

from typing import List, Optional

from aiokafka import TopicPartition
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP
from faust.utils.functional import consecutive_numbers


class NoSkipConsumer(AIOKafkaConsumer):
    """``Consumer._new_offset`` of faust-streaming 0.15.3 with the head check fixed."""

    async def perform_seek(self) -> None:
        """Seek to the committed offsets; where none is committed, the first
        offset is the one a run of acknowledgements must start at."""
        await super().perform_seek()
        unknown = [tp for tp in self.assignment()
                   if self._committed_offset.get(tp) is None and not self._is_changelog_tp(tp)]
        if unknown:
            consumer = self._thread._ensure_consumer()
            starts = await self._thread.call_thread(
                consumer.beginning_offsets, [TopicPartition(tp.topic, tp.partition)
                                             for tp in unknown])
            for tp in unknown:
                start = starts.get(TopicPartition(tp.topic, tp.partition))
                if start is not None and self._committed_offset.get(tp) is None:
                    self._committed_offset[tp] = start

    def _new_offset(self, tp: TP) -> Optional[int]:
        acked = self._acked[tp]
        if not acked:
            return None
        max_offset = max(acked)
        gap_for_tp = self._gap[tp]
        if gap_for_tp:
            # Offsets Faust saw skipped (transaction markers) count as acknowledged.
            candidates = sorted(gap_for_tp.overlap(0, max_offset), key=lambda x: x.begin)
            if candidates:
                stuff_to_add: List[int] = []
                for entry in candidates:
                    stuff_to_add.extend(range(entry.begin, entry.end))
                new_max_offset = max(stuff_to_add[-1], max_offset + 1)
                acked.extend(stuff_to_add)
                gap_for_tp.chop(0, new_max_offset)
        acked.sort()
        committed = self._committed_offset[tp]
        if committed is not None and acked[0] > committed:
            return None  # the committed offset itself was never acknowledged
        batch = next(consecutive_numbers(acked))
        acked[: len(batch)] = []
        self._acked_index[tp].difference_update(batch)
        return batch[-1] + 1
