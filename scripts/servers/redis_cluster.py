"""The cluster profile's Redis Cluster: six nodes, the cluster's state, failover waits.

Fault tests import redis_nodes, cluster_nodes, redis_master_for_key,
redis_master_for_slot, redis_key_slot and wait_redis_cluster (through
``stack``; docs/stack.md).
"""

from __future__ import annotations

import time
from pathlib import Path

from servers.common import BIND_HOST, StackError, port_open, say
from servers.install import run, tool
from servers.process import Server

REDIS_CLUSTER_PORTS = (7001, 7002, 7003, 7004, 7005, 7006)  # each node also uses port+10000 (bus)
REDIS_NODE_TIMEOUT_MS = 5000  # a master is failed over about this long after it stops answering


def redis_call(port: int, *args: str, timeout: float = 2.0):
    """One raw command to the Redis node on port (no client-side parsing, no redirects)."""
    import redis

    connection = redis.Connection(host=BIND_HOST, port=port, socket_timeout=timeout,
                                  socket_connect_timeout=timeout, decode_responses=True)
    try:
        connection.send_command(*args)
        return connection.read_response()
    finally:
        connection.disconnect()


def parse_info(text: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class RedisNode(Server):
    """One of the cluster profile's six Redis Cluster nodes: Debian's redis-server, AOF as
    the single node, its own nodes.conf in its data dir (kept across restarts)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self.name = f"redis-{port}"

    @property
    def port(self) -> int:
        return self._port

    def install(self) -> None:
        tool("redis-server", "redis-server")
        tool("redis-cli", "redis-tools")

    def command(self) -> list[str]:
        return [tool("redis-server", "redis-server"), "--bind", BIND_HOST, "--port", str(self.port),
                "--cluster-enabled", "yes", "--cluster-config-file", str(self.data / "nodes.conf"),
                "--cluster-node-timeout", str(REDIS_NODE_TIMEOUT_MS),
                "--dir", str(self.data), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--logfile", ""]

    def signature(self) -> str:
        return "redis-server"  # redis rewrites its cmdline to "redis-server host:port [cluster]"

    def is_ours(self, pid: int) -> bool:
        """Redis hides its arguments, so also check it runs in our data dir (--dir)."""
        try:
            return super().is_ours(pid) and Path(f"/proc/{pid}/cwd").resolve() == self.data.resolve()
        except OSError:
            return False

    def cluster_info(self) -> dict[str, str]:
        return parse_info(redis_call(self.port, "CLUSTER", "INFO"))

    def healthy(self) -> str:
        """While starting: PING (a new node is not in a cluster yet)."""
        if redis_call(self.port, "PING") != "PONG":
            raise StackError("PING did not answer PONG")
        return "PING ok"

    def probe(self) -> str:
        started = time.perf_counter()
        info = self.cluster_info()
        ms = (time.perf_counter() - started) * 1000
        if info.get("cluster_state") != "ok":
            raise StackError(f"cluster_state:{info.get('cluster_state')} "
                             f"(slots ok {info.get('cluster_slots_ok')}, "
                             f"known nodes {info.get('cluster_known_nodes')})")
        me = next((n for n in cluster_nodes(via=self.port) if n.myself), None)
        role = "?" if me is None else (
            f"master {','.join(f'{a}-{b}' for a, b in me.slots) or 'no slots'}" if me.role == "master"
            else f"replica of {node_name_for(me.master_id, via=self.port)}")
        return f"cluster_state:ok, {role}, {ms:.0f} ms"

REDIS_NODES: list[RedisNode] = [RedisNode(p) for p in REDIS_CLUSTER_PORTS]


def redis_nodes() -> list[RedisNode]:
    """The six Redis Cluster nodes (.name redis-PORT, .port, .address, .pid())."""
    return list(REDIS_NODES)


class RedisClusterNode:
    """One line of CLUSTER NODES, as one node sees the cluster."""

    def __init__(self, line: str) -> None:
        fields = line.split()
        self.node_id, address, flags, master = fields[0], fields[1], fields[2], fields[3]
        host, port = address.split("@", 1)[0].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.name = f"redis-{self.port}"
        self.flags = tuple(flags.split(","))
        self.myself = "myself" in self.flags
        self.role = "master" if "master" in self.flags else "replica"
        self.master_id = None if master == "-" else master
        self.failed = "fail" in self.flags or "fail?" in self.flags
        self.link = fields[7]
        self.slots: list[tuple[int, int]] = []
        for item in fields[8:]:
            if item.startswith("["):  # a slot being migrated or imported
                continue
            start, _, end = item.partition("-")
            self.slots.append((int(start), int(end or start)))

    def serves(self, slot: int) -> bool:
        return any(start <= slot <= end for start, end in self.slots)

    def __repr__(self) -> str:
        return f"<{self.name} {self.role}{' failed' if self.failed else ''} {self.slots or self.master_id}>"


def cluster_nodes(via: int | None = None) -> list[RedisClusterNode]:
    """The Redis Cluster's nodes as the node on port `via` (default: the first that answers) sees them."""
    ports = [via] if via else [n.port for n in REDIS_NODES]
    last_error: Exception | None = None
    for port in ports:
        try:
            text = redis_call(port, "CLUSTER", "NODES")
        except Exception as error:
            last_error = error
            continue
        return [RedisClusterNode(line) for line in text.splitlines() if line.strip()]
    raise StackError(f"no Redis Cluster node answers ({last_error})")


def node_name_for(node_id: str | None, via: int | None = None) -> str:
    for entry in cluster_nodes(via):
        if entry.node_id == node_id:
            return entry.name
    return str(node_id)


def redis_key_slot(key: str | bytes) -> int:
    """The hash slot of a key (CRC16 of the key or its {hash tag}, mod 16384)."""
    from redis.crc import key_slot

    return key_slot(key.encode() if isinstance(key, str) else key)


def redis_master_for_slot(slot: int, timeout: float = 10.0) -> RedisClusterNode:
    """The master that serves a slot, confirmed by that master itself."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            candidates = [n for n in cluster_nodes() if n.role == "master" and not n.failed and n.serves(slot)]
            for candidate in candidates:
                me = next(n for n in cluster_nodes(via=candidate.port) if n.myself)
                if me.role == "master" and me.serves(slot):
                    return me
            problem = f"no live master confirms slot {slot} (candidates {candidates})"
        except Exception as error:
            problem = str(error)
        if time.monotonic() > deadline:
            raise StackError(problem)
        time.sleep(0.5)


def redis_master_for_key(key: str | bytes, timeout: float = 10.0) -> RedisClusterNode:
    """The master that holds a key (.name like "redis-7002", .port, .node_id)."""
    return redis_master_for_slot(redis_key_slot(key), timeout)


def wait_redis_cluster(timeout: float = 60.0) -> str:
    """Wait until the Redis nodes that run form a whole cluster again.

    Every running node reports cluster_state:ok, all of them agree on which
    master serves which slots, those masters all run (so after a master's
    kill -9 this waits for its replica's promotion), and every running replica
    has its replication link up (so a restarted node has synced).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            running = [n for n in REDIS_NODES if port_open(n.port)]
            if not running:
                raise StackError("no Redis Cluster node runs")
            running_ports = {n.port for n in running}
            views = set()
            for server in running:
                info = server.cluster_info()
                if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                    raise StackError(f"{server.name}: cluster_state:{info.get('cluster_state')}, "
                                     f"slots ok {info.get('cluster_slots_ok')}")
                entries = cluster_nodes(via=server.port)
                for entry in entries:
                    if entry.slots and (entry.port not in running_ports or entry.failed):
                        raise StackError(f"{server.name} still sees slots on {entry.name}, which does not run")
                views.add(frozenset((e.name, tuple(e.slots)) for e in entries if e.role == "master" and e.slots))
                replication = parse_info(redis_call(server.port, "INFO", "replication"))
                if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                    raise StackError(f"{server.name}: replication link {replication.get('master_link_status')}")
            if len(views) != 1:
                raise StackError(f"the nodes disagree on who serves which slots: {views}")
            return f"cluster_state:ok on {', '.join(n.name for n in running)}"
        except Exception as error:
            if time.monotonic() > deadline:
                raise StackError(f"redis cluster not ready after {timeout:.0f} s: {error}") from error
        time.sleep(0.5)


def create_redis_cluster_if_new() -> None:
    """`redis-cli --cluster create` once: when all six nodes answer and none is in a cluster yet."""
    infos = {n.name: n.cluster_info() for n in REDIS_NODES}  # raises if a node does not answer
    assigned = {name: int(info.get("cluster_slots_assigned", 0)) for name, info in infos.items()}
    known = {name: int(info.get("cluster_known_nodes", 1)) for name, info in infos.items()}
    if all(a == 0 for a in assigned.values()) and all(k == 1 for k in known.values()):
        say("redis cluster: creating (3 masters, 3 replicas)")
        run([tool("redis-cli", "redis-tools"), "--cluster", "create", *(n.address for n in REDIS_NODES),
             "--cluster-replicas", "1", "--cluster-yes"])
        return
    if all(a == 16384 for a in assigned.values()) and all(k == len(REDIS_NODES) for k in known.values()):
        return
    raise StackError(f"the Redis Cluster is half made (slots assigned {assigned}, known nodes {known}); "
                     "`STACK_PROFILE=cluster scripts/stack.py wipe` starts it afresh")
