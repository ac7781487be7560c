"""Durable writes on Redis Cluster: each master waits for a replica.

Redis replicates asynchronously.  A master killed right after acknowledging
a write takes that write with it while its replica is promoted, yet the
Kafka offset of the batch behind the write is already committed: the write
is lost for good.  So every pipeline of durable writes (sessions, counts,
boards) ends with ``WAIT 1`` on each master it wrote to, on the same
connection as the writes (``WAIT`` covers the writes of its own connection,
and a cluster pipeline sends one node's commands on one connection).

If no replica holds the writes in time (a master without a replica, or a
failover under way) the write stays on the master alone and a warning says
so, rather than stopping the stream while the cluster heals.  On a single
Redis there is no replica to wait for and nothing is added.
"""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, Iterable, List, Optional

from redis.asyncio.cluster import RedisCluster

log = logging.getLogger(__name__)

#: How long a cluster master waits for one replica to hold a pipeline's writes.
REPLICA_WAIT_MS = 200
#: Seconds between two warnings about writes no replica acknowledged in time.
WARN_EVERY_S = 30.0


class ReplicaAcks:
    """Pipelines whose writes a replica holds before they count as done."""

    def __init__(self) -> None:
        self._warned = 0.0

    @asynccontextmanager
    async def pipeline(self, client: Any, keys: Iterable[str],
                       results: Optional[List[Any]] = None) -> AsyncIterator[Any]:
        """A pipeline of writes to ``keys``, executed on leaving the block;
        ``results`` receives the writes' replies (without the ``WAIT``s')."""
        async with client.pipeline(transaction=False) as pipe:
            yield pipe
            nodes: Dict[str, Any] = {}
            if isinstance(client, RedisCluster):
                for key in keys:
                    node = client.get_node_from_key(key)
                    if node is not None:
                        nodes[node.name] = node
                for node in nodes.values():
                    pipe.execute_command("WAIT", 1, REPLICA_WAIT_MS, target_nodes=node)
            replies = await pipe.execute()
        writes = len(replies) - len(nodes)
        if results is not None:
            results.extend(replies[:writes])
        self._check(nodes, replies[writes:])

    def _check(self, nodes: Dict[str, Any], acks: List[Any]) -> None:
        alone = [name for name, n in zip(nodes, acks) if int(n) < 1]
        if alone and time.monotonic() - self._warned > WARN_EVERY_S:
            self._warned = time.monotonic()
            log.warning("Redis master(s) %s acknowledged writes that no replica held within "
                        "%d ms (no replica, or a failover under way): losing that master "
                        "now would lose them", ", ".join(alone), REPLICA_WAIT_MS)
