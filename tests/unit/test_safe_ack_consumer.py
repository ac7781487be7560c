"""SafeAckConsumer: acknowledgements around a rebalance never move a commit
past an event nobody processed (streamapp/consumer.py says how Faust did).

The consumer is Faust's own object, built by a real app and never started:
these are its bookkeeping rules, the part that decides what gets committed.
"""
import asyncio
import time
import types

import aiokafka
import faust
import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import OffsetResetStrategy
from faust.transport.drivers.aiokafka import Consumer as FaustConsumer
from faust.types import TP, Message

from streamapp.consumer import SafeAckConsumer

TOPIC = "safe-ack"
tp = TP(TOPIC, 0)


@pytest.fixture
def consumer():
    app = faust.App("safe-ack-test", broker="kafka://127.0.0.1:1")
    app.transport.Consumer = SafeAckConsumer
    app.topics.acks_enabled_for = lambda topic: True
    app.consumer_generation_id = 7
    app.flow_control.resume()
    return app.consumer


def message(offset: int, generation: int = 7) -> Message:
    return Message(TOPIC, 0, offset, 0.0, 0, [], b"k", b"v", None, generation_id=generation)


def test_app_uses_it():
    from streamapp.app import app
    assert issubclass(app.transport.Consumer, SafeAckConsumer)


def test_an_event_of_the_current_generation_counts(consumer):
    consumer._committed_offset[tp] = 10
    assert consumer.ack(message(10)) is True
    assert consumer._new_offset(tp) == 11


def test_an_event_from_before_the_rebalance_does_not_count(consumer):
    """Faust skips what it fetched in an older generation, and acknowledges it."""
    consumer._committed_offset[tp] = 10
    stale = message(10, generation=6)
    consumer._unacked_messages.add(stale)
    assert consumer.ack(stale) is False
    assert stale.acked and stale not in consumer._unacked_messages  # wait_empty ends
    assert consumer._new_offset(tp) is None
    assert consumer.discarded_acks == 1


def test_nothing_counts_while_the_flow_is_stopped(consumer):
    """A revocation forgets the committed offset, then streams skip-ack what they pull."""
    consumer._committed_offset.pop(tp, None)
    consumer.stop_flow()
    for offset in (40, 41):
        assert consumer.ack(message(offset)) is False
    assert consumer._new_offset(tp) is None
    consumer.resume_flow()
    assert consumer.ack(message(42)) is True


def test_skipped_events_never_reach_a_commit(consumer):
    """The rebalance as Faust runs it: revocation forgets the committed offset
    (10), a batch of 10..12 finishes, the stream skips and acknowledges 13;
    after the assignment the consumer seeks back to 10 and reads 10.. again."""
    consumer._committed_offset.pop(tp, None)
    consumer.stop_flow()
    for offset in (10, 11, 12, 13):
        consumer.ack(message(offset))
    assert consumer._new_offset(tp) is None  # Faust's own consumer: 14, and 13 is lost
    consumer.app.consumer_generation_id = 8
    consumer._committed_offset[tp] = 10
    consumer.resume_flow()
    for offset in (10, 11):
        consumer.ack(message(offset, generation=8))
    assert consumer._new_offset(tp) == 12


def test_nothing_counts_while_streams_are_suspended(consumer):
    """Table recovery runs the consumer's flow to read changelogs while the
    streams stay suspended and skip (and acknowledge) what they pull."""
    consumer._committed_offset[tp] = 10
    consumer.app.flow_control.suspend()
    assert consumer.ack(message(10)) is False
    consumer.app.flow_control.resume()  # after the seek back to 10
    assert consumer.ack(message(10)) is True
    assert consumer._new_offset(tp) == 11


async def test_an_event_fetched_before_the_streams_resume_waits_for_them(consumer):
    """After the seek, the fetch loop reads before the streams resume: those
    events are current and wait; dropping them lost a new partition's first
    events (the fetcher had moved past them, and no seek follows)."""
    consumer.app.flow_control.suspend()
    waiting = asyncio.ensure_future(consumer._wait_current(message(0)))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    consumer.app.flow_control.resume()
    assert await asyncio.wait_for(waiting, 2) is True


async def test_a_waiting_event_is_dropped_when_a_rebalance_comes(consumer):
    consumer.app.flow_control.suspend()
    waiting = asyncio.ensure_future(consumer._wait_current(message(0)))
    await asyncio.sleep(0.1)
    consumer.app.consumer_generation_id = 8  # sought again: it will be read again
    assert await asyncio.wait_for(waiting, 2) is False
    assert await consumer._wait_current(message(1, generation=7)) is False


async def test_changelog_records_are_never_held(consumer):
    """Table recovery reads changelogs while the streams are suspended."""
    consumer.app.flow_control.suspend()
    consumer.app.topics.acks_enabled_for = lambda topic: topic != "changelog"
    record = Message("changelog", 0, 0, 0.0, 0, [], b"k", b"v", None, generation_id=7)
    assert await asyncio.wait_for(consumer._wait_current(record), 1) is True


def test_one_past_the_committed_offset_only_when_kafka_never_delivered_it(consumer):
    """A transaction marker at 10: the first event read after the seek is 11."""
    consumer._committed_offset[tp] = 10
    consumer._first_read[tp] = 11
    consumer.ack(message(11))
    assert consumer._new_offset(tp) == 12


def test_a_delivered_event_is_never_committed_over(consumer):
    """10 was delivered and not acknowledged: Faust commits 12, skipping it."""
    consumer._committed_offset[tp] = 10
    consumer._first_read[tp] = 10
    consumer.ack(message(11))
    assert consumer._new_offset(tp) is None
    consumer.ack(message(10))
    assert consumer._new_offset(tp) == 12


def test_install_gives_the_app_the_safe_consumer(monkeypatch):
    from streamapp import consumer as module

    app = faust.App("safe-ack-install", broker="kafka://127.0.0.1:1")
    assert module.install(app)
    assert app.transport.Consumer is SafeAckConsumer

    other = faust.App("safe-ack-other-version", broker="kafka://127.0.0.1:1")
    before = other.transport.Consumer
    monkeypatch.setattr(faust, "__version__", "0.0.0")
    assert not module.install(other)
    assert other.transport.Consumer is before


async def test_a_seek_waits_for_the_fetch_loop_to_let_go_of_its_batch(consumer):
    """Faust seeks with the flow running when a rebalance needs no table
    recovery: nothing may be delivered from the old positions meanwhile."""
    consumer.resume_flow()
    seen = []

    async def seek():
        seen.append(("seek", consumer.flow_active))
    consumer._seek_to_committed = seek
    consumer._drain_idle.clear()  # the fetch loop holds a batch
    seeking = asyncio.ensure_future(consumer.perform_seek())
    await asyncio.sleep(0.1)
    assert not seen and not consumer.flow_active
    assert await consumer._wait_current(message(5)) is False  # the batch is let go
    consumer._drain_idle.set()
    await asyncio.wait_for(seeking, 2)
    assert seen == [("seek", False)]
    assert consumer.flow_active and not consumer._seek_pending


async def test_a_seek_during_a_rebalance_leaves_the_flow_to_faust(consumer):
    consumer.stop_flow()
    consumer._drain_idle.clear()
    seen = []

    async def seek():
        seen.append("seek")
    consumer._seek_to_committed = seek
    await asyncio.wait_for(consumer.perform_seek(), 1)
    assert seen == ["seek"] and not consumer.flow_active


async def test_the_livelock_check_skips_a_partition_without_a_fetch_position(consumer):
    """A partition being reset to its first offset has no position yet:
    Faust's check asserted on it and crashed the worker."""
    kafka = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    try:
        kafka.assign([TopicPartition(TOPIC, 0)])
        # Started, the consumer's fetcher shares its subscription state.
        kafka._fetcher = types.SimpleNamespace(_subscriptions=kafka._subscription)
        consumer._thread._consumer = kafka
        # Fetched from before, then sent back to its first offset: no position.
        state = kafka._subscription.subscription.assignment.state_value(TopicPartition(TOPIC, 0))
        state.timestamp = time.time() * 1000
        state.await_reset(OffsetResetStrategy.EARLIEST)
        consumer._thread.time_started = time.monotonic()
        assert not consumer.fetch_position_known(tp)
        with pytest.raises(AssertionError):  # Faust's own check, unguarded
            FaustConsumer.verify_event_path(consumer, time.monotonic(), tp)
        consumer.verify_event_path(time.monotonic(), tp)  # skipped, no crash
        state.seek(5)
        assert consumer.fetch_position_known(tp)
    finally:
        consumer._thread._consumer = None
        kafka._fetcher = None
        await kafka.stop()
