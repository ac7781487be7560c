"""The two profiles: which servers each runs, and the app's settings for each.

The single profile runs one server of each kind. STACK_PROFILE=cluster (or
--profile cluster) runs three Kafka KRaft nodes and a six-node Redis Cluster
on ports of their own, next to the single profile's PostgreSQL, MongoDB and
OpenSearch: the same servers (same ports, same data dirs), so both profiles
can run side by side.
"""

from __future__ import annotations

import os

from servers.common import STACK, StackError, say
from servers.kafka import Kafka
from servers.kafka_cluster import KAFKA_NODES
from servers.mongodb import MongoDB
from servers.opensearch import OpenSearch
from servers.postgres import Postgres
from servers.process import Server
from servers.redis import Redis
from servers.redis_cluster import REDIS_NODES

PROFILES = ("single", "cluster")
SHARED_SERVICES = ("postgres", "mongodb", "opensearch")  # one server each, used by both profiles

_POSTGRES = Postgres()  # also FerretDB's backend
SERVERS: dict[str, Server] = {s.name: s for s in (_POSTGRES, Redis(), MongoDB(_POSTGRES), Kafka(), OpenSearch())}
CLUSTER_NODES: dict[str, Server] = {s.name: s for s in (*REDIS_NODES, *KAFKA_NODES)}
#: In the cluster profile "kafka" and "redis" name all nodes of that kind.
CLUSTER_GROUPS: dict[str, list[Server]] = {"kafka": list(KAFKA_NODES), "redis": list(REDIS_NODES)}


def current_profile() -> str:
    """The profile named by STACK_PROFILE ("single" when unset)."""
    profile = os.environ.get("STACK_PROFILE") or "single"
    if profile not in PROFILES:
        raise StackError(f"STACK_PROFILE={profile!r}: choose one of {', '.join(PROFILES)}")
    return profile


def profile_servers(profile: str) -> dict[str, Server]:
    """The servers of a profile, in start order (FerretDB needs PostgreSQL first)."""
    if profile == "single":
        return SERVERS
    return {"postgres": SERVERS["postgres"], "mongodb": SERVERS["mongodb"], **CLUSTER_NODES,
            "opensearch": SERVERS["opensearch"]}


def own_servers(profile: str) -> list[Server]:
    """The servers only this profile runs (not the shared stores)."""
    return [s for s in profile_servers(profile).values() if s.name not in SHARED_SERVICES]


def profile_env(profile: str | None = None) -> dict[str, str]:
    """The app's connection settings for a profile (what `stack.py env` prints).

    Shared stores come from the environment or the app's defaults, as
    streamapp/config.py reads them; the cluster profile's Kafka and Redis are
    fixed. REDIS_CLUSTER tells the app to use a Redis Cluster client.
    """
    profile = profile or current_profile()
    env = {
        "KAFKA_BOOTSTRAP": os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        "POSTGRES_DSN": os.environ.get("POSTGRES_DSN", "postgresql://streamapp@127.0.0.1:5432/streamapp"),
        "MONGODB_URL": os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017/streamapp"),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "ELASTICSEARCH_URL": os.environ.get("ELASTICSEARCH_URL", "http://127.0.0.1:9200"),
        "REDIS_CLUSTER": "false",
        "TOPIC_REPLICAS": os.environ.get("TOPIC_REPLICAS", "1"),
    }
    if profile == "cluster":
        env.update({
            "KAFKA_BOOTSTRAP": ",".join(node.address for node in KAFKA_NODES),
            "REDIS_URL": f"redis://{REDIS_NODES[0].address}/0",
            "REDIS_CLUSTER": "true",
            "TOPIC_REPLICAS": "3",
        })
    return env


def node(name: str) -> Server:
    """Any server of either profile by name (kafka-2, redis-7003, postgres, ...)."""
    found = CLUSTER_NODES.get(name) or SERVERS.get(name)
    if found is None:
        raise StackError(f"no server named {name!r}")
    return found


def selected(names: list[str], profile: str = "single") -> list[Server]:
    """The named servers (all of the profile's when none is named).

    Node names (kafka-2, redis-7003) are the same in every profile; in the
    cluster profile "kafka" and "redis" name all nodes of that kind.
    """
    servers = profile_servers(profile)
    if not names:
        return list(servers.values())
    chosen: list[Server] = []
    for name in names:
        if profile == "cluster" and name in CLUSTER_GROUPS:
            chosen += CLUSTER_GROUPS[name]
        else:
            chosen.append(servers.get(name) or node(name))
    return list(dict.fromkeys(chosen))  # once each, in order


def shared_in_use_by_other(profile: str) -> list[str]:
    """Servers of the other profile that run (they still need the shared stores)."""
    other = "cluster" if profile == "single" else "single"
    return [s.name for s in own_servers(other) if s.pid()]


#: The app's settings for the stack's authenticated connections (``secure_env``).
SECURE_ENV = "secure.env"


def write_secure_env() -> None:
    """Write .stack/secure.env: the app's variables for the authenticated users
    and listeners that the running servers offer (``set -a; . .stack/secure.env``)."""
    values: dict[str, str] = {}
    for server in SERVERS.values():
        if server.pid():
            values.update(server.secure_env())
    path = STACK / SECURE_ENV
    if not values:
        path.unlink(missing_ok=True)
        return
    path.touch(0o600)
    path.write_text("# Written by scripts/stack.py up: the app's settings for the stack's\n"
                    "# authenticated connections. Local passwords, made up once (.stack/secrets/).\n"
                    + "".join(f"{k}={v}\n" for k, v in values.items()))
    say(f"authenticated connection settings in {path}")
