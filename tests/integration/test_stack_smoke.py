"""Smoke test of the real stack: each of the five servers takes one real write
and gives it back, and a worker consumes a record sent to a topic."""
import uuid
from datetime import datetime, timezone

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from harness import wait_until
from streamapp.connections import kafka_client_options

pytestmark = pytest.mark.integration


async def test_kafka_round_trip(cfg):
    topic = f"{cfg.topic_prefix}.smoke"
    value = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(**kafka_client_options(cfg), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, **kafka_client_options(cfg),
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert record.value == value


async def test_postgres_round_trip(stores):
    pool = await stores.postgres.pool()  # also applies the migrations
    async with pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE smoke (v text)")
        await conn.execute("INSERT INTO smoke VALUES ($1)", "hello")
        assert await conn.fetchval("SELECT v FROM smoke") == "hello"
    tables = {r["tablename"] for r in await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"users", "subscriptions", "payments", "preferences", "ratings",
            "applied_events", "schema_migrations"} <= tables


async def test_mongodb_round_trip(stores):
    movies = await stores.mongo.movies()
    await movies.insert_one({"_id": "smoke", "title": "Smoke"})
    assert (await movies.find_one({"_id": "smoke"}))["title"] == "Smoke"
    await movies.delete_one({"_id": "smoke"})
    assert await stores.mongo.ping()


async def test_ferretdb_tables_get_the_stacks_id_index(stores, cfg):
    """On FerretDB the stack gives every collection's table a GIN index on
    ``_id`` (bench/README.md, "MongoDB stand-in"); a cold start once skipped
    it, because PostgreSQL was not answering yet."""
    import asyncpg

    from harness import with_path

    movies = await stores.mongo.movies()
    if "ferretdbVersion" not in await movies.database.client.admin.command("buildInfo"):
        pytest.skip("MongoDB here is not FerretDB")
    conn = await asyncpg.connect(with_path(cfg.postgres_dsn, "ferretdb"))
    try:
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_event_trigger WHERE evtname = 'stack_ferretdb_id_index'") == 1
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE indexname LIKE '%\\_id\\_gin'") >= 1
    finally:
        await conn.close()


async def test_redis_round_trip(stores):
    await stores.redis.client.set(stores.redis.keys.prefix + "smoke", "1", ex=60)
    assert await stores.redis.client.get(stores.redis.keys.prefix + "smoke") == b"1"
    assert await stores.redis.ping()


async def test_audit_store_round_trip(stores):
    now = datetime.now(timezone.utc)
    await stores.audit.index([{"_id": "smoke-1", "doc_kind": "event", "event_id": "smoke-1",
                               "event_type": "smoke", "occurred_at": now}])
    await stores.audit.refresh()
    assert await stores.audit.count(event_type="smoke") == 1
    assert await stores.audit.ping()


async def test_audit_bulk_skips_refused_documents_and_overwrites_replays(stores):
    """A document the index refuses (a field the strict mapping does not know)
    is skipped, not retried forever; indexing the same ids again overwrites."""
    now = datetime.now(timezone.utc)
    good = [{"_id": f"bulk-{i}", "doc_kind": "event", "event_id": f"bulk-{i}",
             "event_type": "bulk", "occurred_at": now, "payload": {"n": i}} for i in range(3)]
    bad = {"_id": "bulk-bad", "doc_kind": "event", "event_type": "bulk", "occurred_at": now,
           "not_in_the_mapping": True}
    assert await stores.audit.index(good + [bad]) == 3
    assert await stores.audit.index(good) == 3  # a replay
    await stores.audit.refresh()
    assert await stores.audit.count(event_type="bulk") == 3
    hits = (await stores.audit.search(event_type="bulk", size=10))["hits"]
    assert sorted(h["payload"]["n"] for h in hits) == [0, 1, 2]


async def test_a_worker_consumes_a_record_sent_to_a_topic(worker, namespace, stores, cfg):
    from streamapp import records as r
    from streamapp.codec import encode, key_of

    event = r.PreferenceSet(event_id=str(uuid.uuid4()), occurred_at=datetime.now(timezone.utc),
                            user_id="u-smoke", key="language", value="pt")
    producer = AIOKafkaProducer(**kafka_client_options(cfg), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(cfg.topic("preferences"), encode(event), key=key_of(event))
    finally:
        await producer.stop()

    async def stored():
        pool = await stores.postgres.pool()
        return await pool.fetchval(
            "SELECT value FROM preferences WHERE user_id = 'u-smoke' AND key = 'language'")
    assert await wait_until(stored, timeout=60) == "pt"


def test_kafka_storage_formats_with_any_cluster_id(tmp_path):
    """The stack formats each Kafka node with a random cluster id; one start in
    64 drew an id beginning with "-", which the storage tool took for an option
    and refused, so the stack never came up (a CI run failed that way)."""
    import subprocess

    from harness import scripts_module

    kafka = scripts_module("servers.kafka")
    assert not any(kafka.new_cluster_id().startswith("-") for _ in range(2000))
    (tmp_path / "server.properties").write_text(kafka.kraft_server_properties(
        node_id=1, voters="1@127.0.0.1:1", port=2, controller=1,
        log_dirs=tmp_path / "log-dirs", replicas=1))
    cluster_id = "-15gWNxUSsavThY2H0MxIg"  # the id of the failed run
    result = subprocess.run(
        [kafka.tool("java", "openjdk-17-jre-headless"), "-Xmx128m",
         "-cp", f"{kafka.CACHE / 'kafka' / 'lib'}/*", *kafka.format_storage(cluster_id, tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    meta = (tmp_path / "log-dirs" / "meta.properties").read_text()
    assert f"cluster.id={cluster_id}" in meta
