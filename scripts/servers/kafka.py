"""The single profile's Kafka: one KRaft node, optionally with a SASL_SSL listener."""

from __future__ import annotations

import base64
import logging
import os
import textwrap
import time
import uuid
from pathlib import Path

from servers.common import BIND_HOST, CACHE, JVM_HEAP, StackError, port_open, say, stack_secret, url_port
from servers.install import maven_fetch, run, tool
from servers.process import Server


def kraft_server_properties(*, node_id: int, voters: str, port: int, controller: int,
                            log_dirs: Path, replicas: int, extra: str = "") -> str:
    """server.properties of a KRaft node (broker and controller) on BIND_HOST.

    ``replicas`` is the replication factor of every topic and internal topic;
    with more than one, ``min.insync.replicas`` is 2 so that an acknowledged
    write survives the loss of a broker.
    """
    host, min_isr = BIND_HOST, 1 if replicas == 1 else 2
    return textwrap.dedent(f"""\
        # Written by scripts/stack.py on every start; edit the script, not this file.
        process.roles=broker,controller
        node.id={node_id}
        controller.quorum.voters={voters}
        listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}
        advertised.listeners=PLAINTEXT://{host}:{port}
        controller.listener.names=CONTROLLER
        inter.broker.listener.name=PLAINTEXT
        listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
        log.dirs={log_dirs}
        num.partitions=4
        auto.create.topics.enable=true
        default.replication.factor={replicas}
        min.insync.replicas={min_isr}
        offsets.topic.replication.factor={replicas}
        transaction.state.log.replication.factor={replicas}
        transaction.state.log.min.isr={min_isr}
        group.initial.rebalance.delay.ms=0
        # The default 128 MiB dedupe buffer would not fit next to a small heap.
        log.cleaner.dedupe.buffer.size=16777216
        """) + textwrap.dedent(extra)


class Kafka(Server):
    """Apache Kafka 3.9 in KRaft mode (broker and controller in one JVM), jars from Maven."""

    name = "kafka"
    start_timeout = 120.0
    coordinates = [
        "org.apache.kafka:kafka_2.13:3.9.1",
        "org.slf4j:slf4j-reload4j:1.7.36",
        "ch.qos.reload4j:reload4j:1.2.25",
    ]
    main_class = "kafka.Kafka"

    @property
    def port(self) -> int:
        return url_port("KAFKA_BOOTSTRAP", "127.0.0.1:9092", 9092)

    @property
    def lib(self) -> Path:
        return CACHE / "kafka" / "lib"

    def install(self) -> None:
        maven_fetch(CACHE / "kafka", self.coordinates)

    def java(self, main: str, *args: str) -> list[str]:
        return [tool("java", "openjdk-17-jre-headless"), *JVM_HEAP, "-Djava.awt.headless=true",
                f"-Dlog4j.configuration=file:{self.data / 'log4j.properties'}",
                "-cp", f"{self.lib}/*", main, *args]

    def prepare(self) -> None:
        super().prepare()
        (self.data / "server.properties").write_text(self.with_sasl_ssl(self.server_properties()))
        (self.data / "log4j.properties").write_text(KAFKA_LOG4J)
        cluster_id = self.data / "cluster.id"
        if not cluster_id.exists():  # generated once; the log dir is formatted with it
            cluster_id.write_text(new_cluster_id())
        if not (self.data / "log-dirs" / "meta.properties").exists():
            run(self.java(*format_storage(cluster_id.read_text().strip(), self.data)))

    def server_properties(self) -> str:
        return kraft_server_properties(
            node_id=1, voters=f"1@{BIND_HOST}:{self.port + 1}", port=self.port,
            controller=self.port + 1, log_dirs=self.data / "log-dirs", replicas=1)

    def command(self) -> list[str]:
        return self.java(self.main_class, str(self.data / "server.properties"))

    def signature(self) -> str:
        return str(self.data / "server.properties")

    def probe(self) -> str:
        import asyncio

        from aiokafka import AIOKafkaClient

        if not port_open(self.port):  # spares aiokafka's noisy retry logging
            raise ConnectionRefusedError(f"nothing listens on {self.address}")
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

        async def metadata() -> str:
            client = AIOKafkaClient(bootstrap_servers=self.address, request_timeout_ms=3000)
            started = time.perf_counter()
            try:
                await client.bootstrap()  # sends a Metadata request
                brokers = len(client.cluster.brokers())
            finally:
                await client.close()
            return f"metadata ok, {brokers} broker(s), {(time.perf_counter() - started) * 1000:.0f} ms"

        return asyncio.run(metadata())


    # --- the SASL_SSL listener (KAFKA_SASL_SSL_PORT): TLS and SCRAM-SHA-512 next to PLAINTEXT

    scram_user = "streamapp"

    @property
    def sasl_ssl_port(self) -> int | None:
        """Port of the authenticated, encrypted listener; none unless KAFKA_SASL_SSL_PORT is set."""
        value = os.environ.get("KAFKA_SASL_SSL_PORT")
        return int(value) if value else None

    @property
    def tls_dir(self) -> Path:
        return self.data / "tls"

    def with_sasl_ssl(self, properties: str) -> str:
        """server.properties plus a SASL_SSL listener, when one is asked for."""
        if not self.sasl_ssl_port:
            return properties
        self.make_certificates()
        listener = f"SASL_SSL://{BIND_HOST}:{self.sasl_ssl_port}"
        lines = []
        for line in properties.splitlines():
            key = line.split("=", 1)[0]
            if key in ("listeners", "advertised.listeners"):
                line += f",{listener}"
            elif key == "listener.security.protocol.map":
                line += ",SASL_SSL:SASL_SSL"
            lines.append(line)
        keystore, password = self.tls_dir / "broker.p12", stack_secret("kafka-keystore")
        lines += [
            "# SASL_SSL: clients authenticate with SCRAM-SHA-512 over TLS (KAFKA_SASL_SSL_PORT).",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.ssl.keystore.type=PKCS12",
            f"listener.name.sasl_ssl.ssl.keystore.location={keystore}",
            f"listener.name.sasl_ssl.ssl.keystore.password={password}",
            f"listener.name.sasl_ssl.ssl.key.password={password}",
        ]
        return "\n".join(lines) + "\n"

    def make_certificates(self) -> None:
        """A local CA and a broker certificate for 127.0.0.1/localhost, made once with openssl."""
        tls = self.tls_dir
        if (tls / "broker.p12").exists():
            return
        openssl = tool("openssl", "openssl")
        tls.mkdir(parents=True, exist_ok=True)
        tls.chmod(0o700)
        say("kafka: making a local CA and a broker certificate")
        run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-subj", "/CN=streamapp local stack CA", "-keyout", str(tls / "ca.key"), "-out", str(tls / "ca.pem"),
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", str(tls / "broker.key"), "-out", str(tls / "broker.csr")])
        (tls / "broker.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                        "extendedKeyUsage=serverAuth\n")
        run([openssl, "x509", "-req", "-in", str(tls / "broker.csr"), "-CA", str(tls / "ca.pem"),
             "-CAkey", str(tls / "ca.key"), "-CAcreateserial", "-days", "3650",
             "-extfile", str(tls / "broker.ext"), "-out", str(tls / "broker.pem")])
        partial = tls / "broker.p12.partial"
        run([openssl, "pkcs12", "-export", "-in", str(tls / "broker.pem"), "-inkey", str(tls / "broker.key"),
             "-certfile", str(tls / "ca.pem"), "-name", "broker", "-out", str(partial),
             "-passout", f"pass:{stack_secret('kafka-keystore')}"])
        partial.replace(tls / "broker.p12")  # the keystore doubles as the "done" marker

    def after_start(self) -> None:
        """With a SASL_SSL listener: create the SCRAM user once, then check it can log in."""
        if not self.sasl_ssl_port:
            return
        marker = self.data / "scram-user"
        if not marker.exists() or marker.read_text() != self.scram_user:
            # A one-off kafka-configs run against the PLAINTEXT listener. (Its
            # --add-config-file does not take SCRAM credentials, so the password
            # is on this local command line; a failure is reported without it.)
            password = stack_secret("kafka-sasl")
            try:
                run(self.java("kafka.admin.ConfigCommand", "--bootstrap-server", self.address, "--alter",
                              "--add-config", f"SCRAM-SHA-512=[iterations=8192,password={password}]",
                              "--entity-type", "users", "--entity-name", self.scram_user))
            except StackError as error:
                raise StackError(str(error).replace(password, "***")) from None
            marker.write_text(self.scram_user)
        self.probe_sasl_ssl()

    def probe_sasl_ssl(self) -> str:
        """A metadata request over the SASL_SSL listener as the SCRAM user."""
        import asyncio
        import ssl

        from aiokafka import AIOKafkaClient

        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

        async def metadata() -> str:
            client = AIOKafkaClient(
                bootstrap_servers=f"{BIND_HOST}:{self.sasl_ssl_port}", request_timeout_ms=3000,
                security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                sasl_plain_username=self.scram_user, sasl_plain_password=stack_secret("kafka-sasl"),
                ssl_context=ssl.create_default_context(cafile=str(self.tls_dir / "ca.pem")))
            try:
                await client.bootstrap()
            finally:
                await client.close()
            return "SASL_SSL ok"

        return asyncio.run(metadata())

    def secure_env(self) -> dict[str, str]:
        if not self.sasl_ssl_port:
            return {}
        return {"KAFKA_BOOTSTRAP": f"{BIND_HOST}:{self.sasl_ssl_port}",
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                "KAFKA_SASL_USERNAME": self.scram_user, "KAFKA_SASL_PASSWORD": stack_secret("kafka-sasl"),
                "KAFKA_SSL_CAFILE": str(self.tls_dir / "ca.pem")}


KAFKA_LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
"""


def new_cluster_id() -> str:
    """A random KRaft cluster id, as Kafka makes them: never starting with "-",
    which the storage tool would read as an option (1 start in 64 did)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def format_storage(cluster_id: str, data: Path) -> tuple[str, ...]:
    """StorageTool arguments that format a node's log dirs once; the id is
    passed joined to its flag so an id made elsewhere cannot read as an option."""
    return ("kafka.tools.StorageTool", "format", "--ignore-formatted",
            f"--cluster-id={cluster_id}", "--config", str(data / "server.properties"))
