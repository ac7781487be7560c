"""The cluster profile's Kafka: three KRaft nodes, and what fault tests ask of them.

Fault tests import kafka_nodes, wait_kafka_cluster, kafka_leaders and
kafka_under_replicated (through ``stack``; docs/stack.md).
"""

from __future__ import annotations

import logging
import time

from servers.common import BIND_HOST, CACHE, DATA, StackError, port_open
from servers.install import maven_fetch, run, tool
from servers.kafka import KAFKA_LOG4J, Kafka, format_storage, kraft_server_properties, new_cluster_id
from servers.process import Server

KAFKA_CLUSTER_PORTS = (19092, 19093, 19094)  # client listeners of kafka-1..3
KAFKA_CONTROLLER_PORTS = (19192, 19193, 19194)  # their KRaft controller listeners
KAFKA_NODE_HEAP = ["-Xms128m", "-Xmx384m"]


def run_async(factory):
    """Run factory()'s coroutine to completion, also when called from a running event loop.

    Fault tests are often async: there the coroutine runs on a loop of its own in
    a helper thread (the caller's loop is blocked meanwhile, like any sync call).
    """
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def kafka_metadata(bootstrap: str, timeout_ms: int = 3000) -> tuple[dict[int, str], float]:
    """{broker id: "host:port"} of the live brokers, as one Metadata request returns them."""
    from aiokafka import AIOKafkaClient

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    async def metadata() -> tuple[dict[int, str], float]:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
        started = time.perf_counter()
        try:
            await client.bootstrap()
            brokers = {b.nodeId: f"{b.host}:{b.port}" for b in client.cluster.brokers()}
        finally:
            await client.close()
        return brokers, (time.perf_counter() - started) * 1000

    return run_async(metadata)


class KafkaNode(Server):
    """One of the cluster profile's Kafka 3.9.1 KRaft nodes: broker and controller in one JVM.

    Uses the single profile's jars (cache/kafka). All three are formatted with
    the same cluster id (kafka_cluster_id()) and vote in a static quorum.
    """

    start_timeout = 120.0
    stop_timeout = 20.0  # stopping all three at once can hang in controlled shutdown

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.name = f"kafka-{node_id}"

    @property
    def port(self) -> int:
        return KAFKA_CLUSTER_PORTS[self.node_id - 1]

    @property
    def controller_port(self) -> int:
        return KAFKA_CONTROLLER_PORTS[self.node_id - 1]

    def install(self) -> None:
        maven_fetch(CACHE / "kafka", Kafka.coordinates)

    def java(self, main: str, *args: str) -> list[str]:
        return [tool("java", "openjdk-17-jre-headless"), *KAFKA_NODE_HEAP, "-Djava.awt.headless=true",
                f"-Dlog4j.configuration=file:{self.data / 'log4j.properties'}",
                "-cp", f"{CACHE / 'kafka' / 'lib'}/*", main, *args]

    def prepare(self) -> None:
        super().prepare()
        (self.data / "server.properties").write_text(self.server_properties())
        (self.data / "log4j.properties").write_text(KAFKA_LOG4J)
        if not (self.data / "log-dirs" / "meta.properties").exists():
            run(self.java(*format_storage(kafka_cluster_id(), self.data)))

    def server_properties(self) -> str:
        voters = ",".join(f"{n}@{BIND_HOST}:{p}" for n, p in enumerate(KAFKA_CONTROLLER_PORTS, start=1))
        return kraft_server_properties(
            node_id=self.node_id, voters=voters, port=self.port, controller=self.controller_port,
            log_dirs=self.data / "log-dirs", replicas=3, extra="""\
            unclean.leader.election.enable=false
            # Three JVMs on a dev box: fewer threads, smaller buffers than a server's.
            num.network.threads=2
            num.io.threads=4
            background.threads=4
            """)

    def command(self) -> list[str]:
        return self.java(Kafka.main_class, str(self.data / "server.properties"))

    def signature(self) -> str:
        return str(self.data / "server.properties")

    def probe(self) -> str:
        """Metadata from this node, which must list itself among the live brokers."""
        if not port_open(self.port):  # spares aiokafka's noisy retry logging
            raise ConnectionRefusedError(f"nothing listens on {self.address}")
        brokers, ms = kafka_metadata(self.address)
        if self.node_id not in brokers:
            raise StackError(f"answers, but broker {self.node_id} is not live yet "
                             f"(live: {sorted(brokers) or 'none'})")
        return f"metadata ok, live brokers {sorted(brokers)}, {ms:.0f} ms"


def kafka_cluster_id() -> str:
    """The cluster profile's Kafka cluster id: an existing node's, else made once."""
    for node in KAFKA_NODES:
        meta = node.data / "log-dirs" / "meta.properties"
        if meta.exists():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
    path = DATA / "kafka-cluster.id"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new_cluster_id() + "\n")
    return path.read_text().strip()

KAFKA_NODES: list[KafkaNode] = [KafkaNode(n) for n in (1, 2, 3)]


def kafka_nodes() -> list[KafkaNode]:
    """The three Kafka nodes (.name kafka-N, .node_id N, .port, .address, .pid())."""
    return list(KAFKA_NODES)


def wait_kafka_cluster(timeout: float = 120.0) -> str:
    """Wait until the live brokers are exactly the Kafka nodes that run, and groups work.

    "Groups work" means the group coordinator answers an OffsetFetch: right after
    a start, __consumer_offsets does not exist yet and admin calls fail with
    GroupCoordinatorNotAvailable. After a kill -9 this waits until the controller
    has fenced the dead broker (broker.session.timeout.ms, 9 s).
    """
    from aiokafka.admin import AIOKafkaAdminClient

    async def group_coordinator(bootstrap: str) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            await admin.list_consumer_group_offsets("stack-py-health")
        finally:
            await admin.close()

    deadline = time.monotonic() + timeout
    while True:
        running = [n for n in KAFKA_NODES if port_open(n.port)]
        try:
            if not running:
                raise StackError("no Kafka node runs")
            bootstrap = ",".join(n.address for n in running)
            brokers, _ = kafka_metadata(bootstrap)
            if set(brokers) != {n.node_id for n in running}:
                raise StackError(f"live brokers {sorted(brokers)}, running nodes "
                                 f"{[n.node_id for n in running]}")
            run_async(lambda: group_coordinator(bootstrap))  # noqa: B023  # runs now
            detail = f"brokers {sorted(brokers)} live, group coordinator answers"
            if len(running) == len(KAFKA_NODES):
                if lagging := kafka_under_replicated():
                    raise StackError(f"{len(lagging)} partition(s) not fully in sync, e.g. {lagging[:3]}")
                detail += ", every partition fully in sync"
            return detail
        except Exception as error:
            if time.monotonic() > deadline:
                raise StackError(f"kafka cluster not ready after {timeout:.0f} s: {error}") from error
        time.sleep(1.0)


def kafka_describe(topics: list[str] | None = None) -> list[dict]:
    """aiokafka's describe_topics for the named topics (all topics, internal ones too, if None)."""
    from aiokafka.admin import AIOKafkaAdminClient

    bootstrap = ",".join(n.address for n in KAFKA_NODES)

    async def describe() -> list[dict]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            return await admin.describe_topics(topics if topics is not None else await admin.list_topics())
        finally:
            await admin.close()

    return run_async(describe)


def kafka_under_replicated() -> list[str]:
    """"topic/partition" of every partition whose in-sync replicas are fewer than its replicas.

    After a broker restarts its replicas catch up before they count for
    min.insync.replicas again: kill another broker before this is empty and
    acks=all producers of those partitions get NotEnoughReplicas.
    """
    return [f"{t['topic']}/{p['partition']}" for t in kafka_describe() for p in t["partitions"]
            if len(p["isr"]) < len(p["replicas"])]


def kafka_leaders(topic: str) -> dict[int, dict]:
    """{partition: {"leader": id (-1 if none), "replicas": [...], "isr": [...]}} of a topic.

    Ask rather than assume: a restarted broker leads nothing until the periodic
    preferred-leader election (leader.imbalance.check.interval.seconds, 300 s).
    """
    (described,) = kafka_describe([topic])
    return {p["partition"]: {"leader": p["leader"], "replicas": list(p["replicas"]), "isr": list(p["isr"])}
            for p in described["partitions"]}
