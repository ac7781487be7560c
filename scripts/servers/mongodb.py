"""MongoDB's wire protocol: a real mongod if there is one, else FerretDB on the stack's PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.parse
from pathlib import Path

from servers.common import BIND_HOST, CACHE, say, url_port
from servers.install import run, tool
from servers.postgres import FERRETDB_DATABASE, Postgres
from servers.process import Server


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

    def __init__(self, postgres: Postgres) -> None:
        self.postgres = postgres  # FerretDB's backend

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
        pg = self.postgres
        backend = f"postgres://{urllib.parse.quote(pg.role)}@127.0.0.1:{pg.port}/{FERRETDB_DATABASE}"
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
