"""The Faust application.

``create_app(settings)`` builds an app from a settings object (tests build
their own); the module-level ``app`` is the one ``faust -A streamapp worker``
runs.  Agents and tables are found by autodiscovery in the ``agents`` and
``tables`` packages and our web views in ``streamapp.web``.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import faust
from faust.sensors.prometheus import setup_prometheus_sensors

from . import consumer
from .config import Settings, settings
from .connections import faust_credentials


def broker_urls(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


def broker_options(cfg: Settings) -> dict:
    """How an app of ours talks to Kafka (the benchmark's pass-through uses them too)."""
    return dict(
        broker=broker_urls(cfg.kafka_bootstrap),
        # SASL and/or TLS from KAFKA_SECURITY_PROTOCOL and friends (None: plaintext).
        broker_credentials=faust_credentials(cfg),
        topic_partitions=cfg.topic_partitions,
        topic_replication_factor=cfg.topic_replicas,
        processing_guarantee=cfg.processing_guarantee,
        consumer_auto_offset_reset="earliest",
        # Durable before acknowledged: every produce waits for all in-sync replicas.
        producer_acks=-1,
        # Rebalances should not stall on slow batches: allow long store retries.
        broker_max_poll_interval=300.0,
        # A worker that died (kill -9) is noticed after this long, and its
        # partitions move; Faust's default of 60 s leaves them idle for a minute.
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
        consumer_metadata_max_age_ms=cfg.consumer_metadata_max_age_ms,
    )


def create_app(cfg: Settings) -> faust.App:
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        cfg.app_id,
        **broker_options(cfg),
        autodiscover=["agents", "tables", "streamapp.web"],
        origin="streamapp",
        store=cfg.table_store,
        datadir=cfg.data_dir,
        table_standby_replicas=cfg.table_standby_replicas,
        web_host=cfg.web_host,
        web_bind=cfg.web_host,
        web_port=cfg.web_port,
        # Operator endpoints on purpose (they are off by default outside debug):
        web_stats_enabled=True,       # / and /assignment/: sensor stats, partitions
        web_graph_enabled=False,      # /graph/ needs pydot + graphviz; not worth it
        web_metrics_enabled=True,     # /performance/: event-loop latency
        # /table/<name>/<key>/ would serve any table value to anyone who can
        # reach the port; nothing uses it (/api/titles/ serves the counts).
        # /router/ stays: partition owners' URLs, no data (routing itself
        # reads the assignor locally and does not call it).
        web_tables_enabled=False,
        web_cors_options={},
    )
    if cfg.prometheus_sensor:
        setup_prometheus_sensors(app, name_prefix="faust")
    else:
        _serve_our_metrics(app)
    consumer.install(app)

    @app.on_worker_init.connect  # type: ignore[arg-type]  # Faust passes signal= as a keyword
    def _size_producer_buffer(sender: faust.App, **_: object) -> None:
        # Not at import: the producer would be bound to the event loop of the
        # moment, and a test session's loop is another one.
        sender.producer.buffer.max_messages = cfg.producer_buffer_max_messages

    return app


def _serve_our_metrics(app: faust.App) -> None:
    """``/metrics`` with our counters only (no per-message Faust sensor)."""
    from prometheus_client import REGISTRY, generate_latest

    @app.page("/metrics")
    async def metrics(self: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return self.bytes(generate_latest(REGISTRY), content_type="text/plain")


async def know_partitions(app: faust.App, topic: str, timeout: float = 5.0) -> None:
    """Make sure the app's producer can hash keys of ``topic`` to partitions.

    Faust's router and ``producer.key_partition`` use the producer's
    partitioner, which reads that producer's cluster metadata.  The app never
    produces to the topics it routes by (the ratings topic, the changelogs),
    so that metadata may lack them and the lookup fails with a ``TypeError``
    deep in aiokafka (seen after a rebalance on a three-broker cluster).
    Asking once adds the topic, which the producer then keeps fresh.
    """
    producer = app.producer._ensure_producer()  # type: ignore[attr-defined]  # the aiokafka producer
    if producer._metadata.partitions_for_topic(topic) is None:
        await asyncio.wait_for(producer.partitions_for(topic), timeout)


app = create_app(settings)

