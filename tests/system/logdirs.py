"""Bytes a topic takes on the brokers' disks (Kafka's DescribeLogDirs, v1).

aiokafka's admin client has no ``describe_log_dirs``; the request is small
enough to send by hand.  End minus start offsets count records, not what
compaction has removed; this is what the broker really keeps.
"""
from __future__ import annotations

from typing import Dict

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Int64, Schema, String

from streamapp.config import Settings
from streamapp.connections import kafka_client_options


class DescribeLogDirsResponse_v1(Response):
    API_KEY = 35
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", Array(
            ("error_code", Int16),
            ("log_dir", String("utf-8")),
            ("topics", Array(
                ("name", String("utf-8")),
                ("partitions", Array(
                    ("partition_index", Int32),
                    ("partition_size", Int64),
                    ("offset_lag", Int64),
                    ("is_future_key", Boolean))))))))


class DescribeLogDirsRequest_v1(RequestStruct):
    API_KEY = 35
    API_VERSION = 1
    RESPONSE_TYPE = DescribeLogDirsResponse_v1
    SCHEMA = Schema(("topics", Array(("topic", String("utf-8")), ("partitions", Array(Int32)))))


class DescribeLogDirsRequest(Request[DescribeLogDirsRequest_v1]):
    API_KEY = 35

    def __init__(self, topic: str, partitions: list) -> None:
        self._topic = topic
        self._partitions = partitions

    def build(self, request_struct_class: type[DescribeLogDirsRequest_v1]
              ) -> DescribeLogDirsRequest_v1:
        return request_struct_class([(self._topic, self._partitions)])


async def topic_bytes(topic: str, cfg: Settings) -> Dict[int, int]:
    """Bytes per partition of ``topic`` on the brokers (the leader's copy, or the largest)."""
    admin = AIOKafkaAdminClient(**kafka_client_options(cfg))
    await admin.start()
    try:
        partitions = sorted(admin._client.cluster.partitions_for_topic(topic) or ())
        if not partitions:
            await admin._client.force_metadata_update()
            partitions = sorted(admin._client.cluster.partitions_for_topic(topic) or ())
        sizes: Dict[int, int] = {}
        for broker in admin._client.cluster.brokers():
            reply = await admin._client.send(
                broker.nodeId, DescribeLogDirsRequest(topic, partitions))
            for _error, _dir, topics in reply.results:
                for _name, parts in topics:
                    for index, size, _lag, _future in parts:
                        sizes[index] = max(sizes.get(index, 0), size)
        return sizes
    finally:
        await admin.close()
