"""Shared test plumbing: an isolated namespace on the real stack, a real
worker process, the simulator, and store resets.

Every test session gets its own topic prefix, consumer group, PostgreSQL
database, MongoDB database, Redis database and audit index prefix, so runs
never see each other's data.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent


#: Tags of the namespaces this process made (``drop_namespaces`` at the end).
CREATED: List[str] = []


def isolated_env(tag: Optional[str] = None, database: str = "streamapp_test",
                 redis_db: int = 1) -> Dict[str, str]:
    """Environment variables that give a run its own corner of every store.

    Topics, consumer groups and audit indices are new per tag; ``database``
    (PostgreSQL and MongoDB) and ``redis_db`` let test modules that run side
    by side keep their data apart too.
    """
    tag = tag or f"t{uuid.uuid4().hex[:8]}"
    CREATED.append(tag)
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
        "AUDIT_INDEX_PREFIX": f"{tag}-audit",
        "STREAMAPP_DATA_DIR": str(ROOT / ".stack" / "data" / "test-workers" / tag),
        "TOPIC_PARTITIONS": "4",
        "MIRROR_INTERVAL_S": "0.5",
    }


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
    prefixes = tuple(p for tag in tags for p in (f"{tag}.", f"streamapp-{tag}-"))
    try:
        admin = AIOKafkaAdminClient(**kafka_client_options(cfg))
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if t.startswith(prefixes)]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()
    except Exception as exc:
        print(f"could not delete the topics of {', '.join(tags)}: {exc}", file=sys.stderr)
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


async def reset_stores(env: Dict[str, str]) -> None:
    """Empty the env's databases (not the topics: those are new per tag)."""
    import asyncpg
    import redis.asyncio as aioredis
    from pymongo import AsyncMongoClient

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
    r = aioredis.Redis.from_url(env["REDIS_URL"])
    await r.flushdb()
    await r.aclose()


def settings_for(env: Dict[str, str]):
    """A Settings object as a process started with ``env`` would build it."""
    from streamapp.config import Settings

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def stores_for(env: Dict[str, str]):
    from streamapp.stores import Stores

    return Stores(settings_for(env))


#: ``python`` arguments of a streamapp worker.
FAUST_WORKER = ("-m", "faust", "-A", "streamapp", "worker", "-l", "info")


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

    def start(self) -> "Worker":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # A restarted worker appends to the same log: only lines after this
        # point tell whether *this* process is ready.
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
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
    subprocess.run([sys.executable, "-m", "streamapp.simulator", "--quiet",
                    "--summary-json", str(summary), *args],
                   cwd=ROOT, env={**os.environ, **env}, check=True,
                   stdout=subprocess.DEVNULL)
    return json.loads(summary.read_text())


async def wait_until(check, timeout: float, interval: float = 1.0):
    """Poll ``check()`` (async, returns truthy when done) until true or timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
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


def api_headers() -> Dict[str, str]:
    """Headers a test client sends to the read API: the first configured
    bearer token (``API_TOKENS``), when there is one."""
    tokens = [t.strip() for t in os.environ.get("API_TOKENS", "").split(",") if t.strip()]
    return {"Authorization": f"Bearer {tokens[0]}"} if tokens else {}
