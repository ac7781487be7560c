"""Shared test plumbing: an isolated namespace on the real stack, a real
worker process, the simulator, and store resets.

Every namespace gets its own topic prefix, consumer group, Redis key prefix
and audit index prefix; its PostgreSQL and MongoDB databases are named after
the test session (``SESSION``), and its workers' web ports are the session's
own, so two test runs at once on one stack never see each other's data.
"""
from __future__ import annotations

import asyncio
import fcntl
import importlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent


#: This test session's tag (``TEST_SESSION``, else the pid and a random
#: suffix): the databases of every namespace are named after it.
SESSION = re.sub(r"[^a-z0-9]", "", os.environ.get("TEST_SESSION", "").lower()) or \
    f"s{os.getpid()}{secrets.token_hex(2)}"

#: Tags of the namespaces this process made (``drop_namespaces`` at the end).
CREATED: List[str] = []

#: PostgreSQL/MongoDB databases of this session's namespaces (``drop_databases``).
DATABASES: set = set()

#: Whether this session used the stack at all (nothing to clean up otherwise).
USED_STACK = [False]

#: The read API's bearer token for the workers of this test session: new
#: per process, so no token outlives the run (``isolated_env`` passes it on).
API_TOKEN = secrets.token_urlsafe(32)


def isolated_env(tag: Optional[str] = None, database: str = "streamapp_test",
                 redis_db: int = 1, cluster: bool = False) -> Dict[str, str]:
    """Environment variables that give a run its own corner of every store.

    Topics, consumer groups, Redis keys (under ``sa:<tag>:``, inside the
    stack's ACL pattern ``sa:*``) and audit indices are new per tag;
    ``database`` (PostgreSQL and MongoDB, suffixed with the session tag) and
    ``redis_db`` let test modules of one session keep their data apart too.
    ``cluster``: the stack's cluster profile (3 Kafka brokers, Redis Cluster).
    """
    tag = tag or f"t{uuid.uuid4().hex[:8]}"
    CREATED.append(tag)
    database = f"{database}_{SESSION}"
    DATABASES.add(database)
    base_dsn = os.environ.get("POSTGRES_DSN", "postgresql://streamapp@127.0.0.1:5432/streamapp")
    mongo = (os.environ.get("TEST_MONGODB_URL") or os.environ.get("MONGODB_URL")
             or "mongodb://127.0.0.1:27017/streamapp_test")
    redis = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    return {
        "STREAMAPP_ID": f"streamapp-{tag}",
        "TOPIC_PREFIX": tag,
        "POSTGRES_DSN": with_path(base_dsn, database),
        "MONGODB_URL": with_path(mongo, database),
        "REDIS_URL": with_path(redis, str(redis_db)),
        "REDIS_KEY_PREFIX": f"sa:{tag}:",
        "AUDIT_INDEX_PREFIX": f"{tag}-audit",
        "STREAMAPP_DATA_DIR": str(ROOT / ".stack" / "data" / "test-workers" / tag),
        "TOPIC_PARTITIONS": "4",
        "MIRROR_INTERVAL_S": "0.5",
        "API_TOKENS": API_TOKEN,
        **(cluster_env(tag) if cluster else {}),
    }


def free_port() -> int:
    """A port nothing listens on now, from the OS."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_PORT_LOCK: List[int] = []


def web_port(offset: int = 0) -> int:
    """A web port for a worker of this session: ``TEST_WEB_PORT + offset``
    while this session holds the lock on ``TEST_WEB_PORT`` (the first session
    on the machine to ask), else a free port from the OS (any concurrent one)."""
    base = os.environ.get("TEST_WEB_PORT")
    if not base:
        return free_port()
    if not _PORT_LOCK:
        locks = ROOT / ".stack" / "test-ports"
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / f"{base}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the process ends
            _PORT_LOCK.append(int(base))
        except BlockingIOError:
            os.close(fd)
            _PORT_LOCK.append(0)
    return _PORT_LOCK[0] + offset if _PORT_LOCK[0] else free_port()


def scripts_module(name: str):
    """A module of ``scripts/`` (``stack``, ``tools``, ``servers.kafka`` ...),
    imported as the scripts import each other: with ``scripts/`` on the path."""
    scripts = str(ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    return importlib.import_module(name)


def stack_module():
    """``scripts/stack.py`` as a module: node control for fault tests."""
    return scripts_module("stack")


def cluster_env(tag: str) -> Dict[str, str]:
    """The cluster profile's Kafka and Redis, with a key prefix of the tag's own."""
    profile = stack_module().profile_env("cluster")
    BOOTSTRAPS.add(profile["KAFKA_BOOTSTRAP"])
    return {name: profile[name] for name in ("KAFKA_BOOTSTRAP", "REDIS_URL", "REDIS_CLUSTER",
                                              "TOPIC_REPLICAS")} | {
        "REDIS_KEY_PREFIX": f"{tag}:"}


def cluster_up() -> bool:
    """Whether the cluster profile's Kafka brokers and Redis Cluster all answer."""
    stack = stack_module()
    return all(stack.port_open(n.port) for n in [*stack.kafka_nodes(), *stack.redis_nodes()])


#: Kafka clusters that namespaces were made on, besides the default one.
BOOTSTRAPS: set = set()


def with_path(url: str, path: str) -> str:
    """``url`` naming another database (its path), credentials and query kept."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + path))


def url_path(url: str) -> str:
    """The database a URL names (its path, without the query)."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.lstrip("/"))


def stack_secure_env() -> Dict[str, str]:
    """The settings ``scripts/stack.py up`` wrote for the stack's authenticated
    connections (``.stack/secure.env``); empty when the stack offers none
    (e.g. servers reused from elsewhere, or no KAFKA_SASL_SSL_PORT)."""
    path = Path(os.environ.get("STACK_DIR") or ROOT / ".stack") / "secure.env"
    if not path.exists():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def authenticated_env(env: Dict[str, str], secure: Dict[str, str]) -> Dict[str, str]:
    """``env`` (a namespace) switched to the stack's authenticated connections:
    Kafka over SASL_SSL, the Redis ACL user, the PostgreSQL worker role (with
    the namespace's own role as the migration owner), same databases."""
    out = dict(env)
    out.update({k: v for k, v in secure.items() if k.startswith("KAFKA_")})
    if "REDIS_URL" in secure:
        out["REDIS_URL"] = with_path(secure["REDIS_URL"], url_path(env["REDIS_URL"]))
    if "POSTGRES_DSN" in secure:
        out["POSTGRES_MIGRATE_DSN"] = env["POSTGRES_DSN"]
        out["POSTGRES_DSN"] = with_path(secure["POSTGRES_DSN"], url_path(env["POSTGRES_DSN"]))
    return out


async def drop_namespaces(tags: Sequence[str]) -> None:
    """Delete the namespaces' Kafka topics and audit indices (best effort).

    Each namespace leaves dozens of partitions behind (event topics, table
    changelogs); a broker that keeps thousands of them starts slowly and
    spends CPU on them, which would distort later runs on the machine.
    """
    from aiokafka.admin import AIOKafkaAdminClient
    from opensearchpy import AsyncOpenSearch

    from streamapp.connections import kafka_client_options

    if not tags:
        return
    cfg = settings_for({})
    await _drop_redis_keys(cfg, tags)
    prefixes = tuple(p for tag in tags for p in (f"{tag}.", f"streamapp-{tag}-"))
    for bootstrap in {cfg.kafka_bootstrap, *BOOTSTRAPS}:
        try:
            admin = AIOKafkaAdminClient(**kafka_client_options(
                cfg.with_overrides(kafka_bootstrap=bootstrap)))
            await admin.start()
            try:
                mine = [t for t in await admin.list_topics() if t.startswith(prefixes)]
                if mine:
                    await admin.delete_topics(mine)
            finally:
                await admin.close()
        except Exception as exc:
            print(f"could not delete the topics of {', '.join(tags)} on {bootstrap}: {exc}",
                  file=sys.stderr)
    if not cfg.elasticsearch_url:
        return
    tls = {"ca_certs": cfg.elasticsearch_ca_file} if cfg.elasticsearch_ca_file else {}
    client = AsyncOpenSearch(hosts=[cfg.elasticsearch_url], timeout=10, **tls)
    try:
        patterns = ",".join(f"{tag}-*" for tag in tags)
        await client.indices.delete(index=patterns, params={"ignore_unavailable": "true",
                                                            "allow_no_indices": "true"})
        templates = await client.indices.get_index_template()
        for t in templates.get("index_templates", []):
            if t["name"].startswith(tuple(f"{tag}-" for tag in tags)):
                await client.indices.delete_index_template(name=t["name"])
    except Exception as exc:
        print(f"could not delete the audit indices of {', '.join(tags)}: {exc}", file=sys.stderr)
    finally:
        await client.close()


async def _drop_redis_keys(cfg, tags: Sequence[str]) -> None:
    """Delete the namespaces' Redis keys (``sa:<tag>:...``) in the databases
    this session used (best effort)."""
    import redis.asyncio as aioredis

    if cfg.redis_cluster:
        return
    for db in {1, *REDIS_DBS}:
        r = aioredis.Redis.from_url(with_path(cfg.redis_url, str(db)))
        try:
            for tag in tags:
                keys = [k async for k in r.scan_iter(match=f"sa:{tag}:*", count=1000)]
                if keys:
                    await r.delete(*keys)
        except Exception as exc:
            print(f"could not delete the Redis keys of {', '.join(tags)}: {exc}", file=sys.stderr)
        finally:
            await r.aclose()


#: Redis databases this session's namespaces used.
REDIS_DBS: set = set()


async def drop_databases(databases: Sequence[str]) -> None:
    """Drop this session's PostgreSQL and MongoDB databases (best effort)."""
    import asyncpg
    from pymongo import AsyncMongoClient

    if not databases:
        return
    cfg = settings_for({})
    try:
        conn = await asyncpg.connect(with_path(cfg.postgres_dsn, "streamapp"))
        try:
            for name in databases:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        mongo = AsyncMongoClient(cfg.mongodb_url)
        try:
            for name in databases:
                await mongo.drop_database(name)
        finally:
            await mongo.close()
    except Exception as exc:
        print(f"could not drop the databases {', '.join(databases)}: {exc}", file=sys.stderr)


async def reset_stores(env: Dict[str, str]) -> None:
    """Empty the env's databases (not the topics: those are new per tag)."""
    import asyncpg
    import redis.asyncio as aioredis
    from pymongo import AsyncMongoClient

    USED_STACK[0] = True
    database = url_path(env["POSTGRES_DSN"])
    conn = await asyncpg.connect(with_path(env["POSTGRES_DSN"], "streamapp"))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(env["POSTGRES_DSN"])
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    mongo = AsyncMongoClient(env["MONGODB_URL"])
    await mongo.drop_database(url_path(env["MONGODB_URL"]))
    await mongo.close()
    if env.get("REDIS_CLUSTER") == "true":  # one database: delete the namespace's keys
        from redis.asyncio.cluster import RedisCluster

        rc = RedisCluster.from_url(env["REDIS_URL"])
        keys = [k async for k in rc.scan_iter(match=env["REDIS_KEY_PREFIX"] + "*", count=1000)]
        if keys:
            await rc.delete(*keys)
        await rc.aclose()
    else:  # databases are shared by concurrent sessions: only the namespace's keys
        REDIS_DBS.add(int(url_path(env["REDIS_URL"]) or 0))
        r = aioredis.Redis.from_url(env["REDIS_URL"])
        keys = [k async for k in r.scan_iter(match=env["REDIS_KEY_PREFIX"] + "*", count=1000)]
        if keys:
            await r.delete(*keys)
        await r.aclose()


def settings_for(env: Dict[str, str]):
    """A Settings object as a process started with ``env`` would build it."""
    from streamapp.config import Settings

    return Settings.from_env({**os.environ, **env})


def stores_for(env: Dict[str, str]):
    from streamapp.stores import Stores

    return Stores(settings_for(env))


#: ``python`` arguments of a streamapp worker.
FAUST_WORKER = ("-m", "faust", "-A", "streamapp", "worker", "-l", "info")


#: Every worker process this session started, in order: a failing test's
#: report quotes the notable lines of their logs (``tests/conftest.py``).
STARTED: List[Worker] = []

#: Log lines worth quoting when a test fails: problems, rebalances, the
#: watchdog, and Kafka resetting a consumer's position.
NOTABLE = re.compile(r"\[(WARNING|ERROR|CRITICAL)\]|Traceback|watchdog|stalled|set aside|"
                     r"Revoking|newly assigned|out of range|Resetting offset|rebalanc")


class Worker:
    """A real ``faust -A streamapp worker`` process (or another ``argv``)."""

    def __init__(self, env: Dict[str, str], log_path: Path, port: int = 6066,
                 argv: Sequence[str] = FAUST_WORKER) -> None:
        # Tests run S3 inside the worker: one process per test worker.
        self.env = {**os.environ, "AUDIT_IN_WORKER": "true", **env, "WEB_PORT": str(port)}
        self.log_path = log_path
        self.port = port
        self.argv = list(argv)
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> Worker:
        USED_STACK[0] = True
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # A restarted worker appends to the same log: only lines after this
        # point tell whether *this* process is ready.
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        STARTED.append(self)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *self.argv], cwd=ROOT, env=self.env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.tail()}")
            with open(self.log_path, "rb") as log:
                log.seek(self.log_offset)
                ready = b"Worker]: Ready" in log.read()
            if ready:
                return
            time.sleep(0.5)
        raise TimeoutError(f"worker not ready in {timeout}s: {self.tail()}")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def notable(self, n: int = 60) -> str:
        """The last ``n`` notable lines of this worker's log (``NOTABLE``)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join([line[:300] for line in lines if NOTABLE.search(line)][-n:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)

    def stop(self, grace: float = 30) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        self.signal_and_wait(signal.SIGTERM, grace, otherwise=self.kill)

    def signal_and_wait(self, sig: int, timeout: float, otherwise: Callable[[], None]) -> None:
        """Send ``sig`` to the process group; call ``otherwise`` if it outlives ``timeout``."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                otherwise()


def simulate(env: Dict[str, str], *args: str, summary: Path) -> dict:
    """Run the simulator to completion and return its summary."""
    USED_STACK[0] = True
    subprocess.run([sys.executable, "-m", "streamapp.simulator", "--quiet",
                    "--summary-json", str(summary), *args],
                   cwd=ROOT, env={**os.environ, **env}, check=True,
                   stdout=subprocess.DEVNULL)
    return json.loads(summary.read_text())


async def wait_until(check, timeout: float, interval: float = 1.0):
    """Poll ``check()`` (async, returns truthy when done) until true or timeout.

    A check that raises a timeout (a shared server slow to answer on a busy
    machine) counts as not done yet; if the last try timed out, that error is
    raised at the deadline.
    """
    from opensearchpy.exceptions import ConnectionTimeout

    deadline = time.monotonic() + timeout
    last = None
    error: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            last, error = await check(), None
        except (TimeoutError, ConnectionTimeout) as exc:
            last, error = None, exc
        if last:
            return last
        await asyncio.sleep(interval)
    if error is not None:
        raise error
    return last


def expected_vs_tally(summary: dict, tally: dict) -> List[str]:
    """Differences between what the simulator expects and what stores hold."""
    expect = summary["expect"]
    diffs = []
    for store in ("postgres", "mongodb", "redis"):
        for key, want in expect[store].items():
            got = tally[store].get(key)
            if got != want:
                diffs.append(f"{store}.{key}: expected {want}, found {got}")
    if tally["deadletter"] != expect["deadletter"]:
        diffs.append(f"deadletter: expected {expect['deadletter']}, found {tally['deadletter']}")
    return diffs


async def read_topic(cfg, topic: str) -> list:
    """Every record of ``topic``, from its beginning to its end now."""
    from aiokafka import AIOKafkaConsumer

    from streamapp.connections import kafka_client_options

    consumer = AIOKafkaConsumer(topic, **kafka_client_options(cfg), auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    found = []
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=2000, max_records=5000)
            if not batches:
                return found
            found.extend(r for records in batches.values() for r in records)
    finally:
        await consumer.stop()


async def catalog_gaps(cfg, stores) -> List[str]:
    """Titles the catalog topic holds that MongoDB lacks (or holds without a
    title): each with its events' partition, offset and type, what S2's
    outcome messages say of them, and the group's (committed, end) offsets
    per partition; what to look at when a count of movies comes up short (a
    lost event or a lost write)."""
    from streamapp.deployment import Deployment

    topic = cfg.topic("catalog")
    events: Dict[str, List[tuple]] = {}
    for r in await read_topic(cfg, topic):
        body = json.loads(r.value)
        events.setdefault(body.get("movie_id"), []).append(
            (body.get("event_id"), f"{r.partition}@{r.offset} {body.get('type')}"))
    movies = await stores.mongo.movies()
    docs = {d["_id"]: d async for d in movies.find({"_id": {"$in": list(events)}})}
    missing = {movie_id: seen for movie_id, seen in events.items()
               if movie_id not in docs or "title" not in docs[movie_id]}
    if not missing:
        return []
    deployment = Deployment(cfg, stores, cfg.app_id)
    try:
        offsets = {tp.partition: marks for tp, marks in (await deployment.offsets([topic])).items()}
    finally:
        await deployment.close()
    wanted = {event_id for seen in missing.values() for event_id, _ in seen}
    said: Dict[str, List[str]] = {}
    for r in await read_topic(cfg, cfg.output_topic("outcomes")):
        body = json.loads(r.value)
        for listed in body.get("events", []):
            if listed[0] in wanted:
                said.setdefault(listed[0], []).append(f"{body.get('store')}:{body.get('status')}")
    gaps = []
    for movie_id, seen in sorted(missing.items()):
        doc = docs.get(movie_id)
        held = "no document" if doc is None else f"a document without a title: {sorted(doc)}"
        told = [f"{where} outcomes {said.get(event_id, [])}" for event_id, where in seen]
        gaps.append(f"{movie_id}: {held}; events {told}; (committed, end) {offsets}")
    return gaps


def api_headers(env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Headers a test client sends to the read API: the first configured
    bearer token (``API_TOKENS`` of ``env``, default this process's
    environment), when there is one."""
    source = os.environ if env is None else env
    tokens = [t.strip() for t in source.get("API_TOKENS", "").split(",") if t.strip()]
    return {"Authorization": f"Bearer {tokens[0]}"} if tokens else {}


async def measure(env: Dict[str, str], summary: dict, with_audit: bool = True,
                  settle_s: float = 900) -> Dict[str, object]:
    """Compare stores with the summary; returns the scenario line's numbers,
    and under ``unsettled`` what still differed after ``settle_s`` seconds."""
    from streamapp.tally import tally

    stores, cfg = stores_for(env), settings_for(env)
    try:
        async def settled():
            return not expected_vs_tally(summary, await tally(stores, cfg))
        await wait_until(settled, timeout=settle_s, interval=5)
        counts = await tally(stores, cfg)
        unsettled = expected_vs_tally(summary, counts)
        expect = summary["expect"]
        pg_expected = (sum(n for t, n in summary["per_type"].items()
                           if t.split(".")[0] in ("user", "subscription", "payment", "preference"))
                       + expect["postgres"]["ratings"])
        pg_stored = counts["postgres"]["applied_events"] + counts["postgres"]["ratings"]
        mongo_expected = expect["mongodb"]["movies"] + expect["mongodb"]["rated_votes"]
        mongo_stored = counts["mongodb"]["movies"] + counts["mongodb"]["rated_votes"]
        redis_expected = sum(expect["redis"].values())
        redis_stored = sum(counts["redis"][k] for k in expect["redis"])
        # Tables: the mirrored all-time counts must equal PostgreSQL's durable rows.
        pool = await stores.postgres.pool()
        durable = {r["movie_id"]: r["n"] for r in await pool.fetch(
            "SELECT movie_id, count(*) AS n FROM ratings GROUP BY movie_id")}

        async def mirrored():
            board = dict(await stores.redis.top(stores.redis.keys.rated_all, 100_000))
            return board if {k: int(v) for k, v in board.items()} == durable else None
        board = await wait_until(mirrored, timeout=60, interval=2) or dict(
            await stores.redis.top(stores.redis.keys.rated_all, 100_000))
        table_total = int(sum(board.values()))
        audit_stored = audit_expected = 0
        if with_audit:
            async def audited():
                await stores.audit.refresh()
                return await stores.audit.count(doc_kind="event") >= summary["valid"]
            await wait_until(audited, timeout=300, interval=3)
            audit_stored = await stores.audit.count(doc_kind="event")
            audit_expected = summary["valid"]
        pairs = [(pg_expected, pg_stored), (mongo_expected, mongo_stored),
                 (redis_expected, redis_stored), (audit_expected, audit_stored),
                 (sum(durable.values()), table_total)]
        return {
            "produced": summary["valid"],
            "stored_postgres": pg_stored, "stored_mongo": mongo_stored,
            "stored_redis": redis_stored, "stored_audit": audit_stored,
            "lost": sum(max(0, want - got) for want, got in pairs),
            "duplicated": sum(max(0, got - want) for want, got in pairs),
            "unsettled": unsettled,
        }
    finally:
        await stores.close()
