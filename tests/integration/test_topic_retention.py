"""Event topics keep their records by size, not by time.

Producers timestamp records with ``occurred_at``, which the contract allows
back to 2000; a topic that deletes by record time would drop such events on
the broker's next retention check, read or not (``streamapp.topics``).
Whoever creates the topics (a worker, the simulator), the event topics come
out kept by size, and S2's own topics keep Kafka's time retention.
"""
from typing import Dict, List

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from harness import isolated_env, settings_for
from streamapp.connections import kafka_client_options
from streamapp.simulator.__main__ import ensure_topics
from streamapp.topics import event_topic_names, output_topic_names

pytestmark = pytest.mark.integration


async def retention_of(cfg, names: List[str]) -> Dict[str, Dict[str, str]]:
    """``retention.ms`` and ``retention.bytes`` of each topic, as the broker reports them."""
    admin = AIOKafkaAdminClient(**kafka_client_options(cfg))
    await admin.start()
    try:
        replies = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    finally:
        await admin.close()
    found: Dict[str, Dict[str, str]] = {}
    for reply in replies:
        for _error, _message, _kind, name, entries in reply.resources:
            found[name] = {entry[0]: entry[1] for entry in entries
                           if entry[0] in ("retention.ms", "retention.bytes")}
    return found


def assert_kept_by_size(cfg, found: Dict[str, Dict[str, str]]) -> None:
    for name in event_topic_names(cfg):
        assert found[name] == {
            "retention.ms": "-1", "retention.bytes": str(cfg.topic_retention_bytes)}, name
    for name in output_topic_names(cfg):
        assert found[name]["retention.ms"] != "-1", name


def all_topics(cfg) -> List[str]:
    return event_topic_names(cfg) + output_topic_names(cfg)


async def test_topics_a_worker_declares_keep_events_by_size(worker, cfg):
    assert_kept_by_size(cfg, await retention_of(cfg, all_topics(cfg)))


async def test_topics_the_simulator_makes_keep_events_by_size():
    cfg = settings_for({**isolated_env(), "TOPIC_RETENTION_BYTES": str(64 << 20)})
    await ensure_topics(cfg)
    assert_kept_by_size(cfg, await retention_of(cfg, all_topics(cfg)))
