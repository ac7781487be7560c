"""MongoDB's wire protocol: a real mongod if there is one, else FerretDB on the stack's PostgreSQL."""

from __future__ import annotations

import os
import shutil
import time

from servers.common import BIND_HOST, url_port
from servers.ferretdb import FerretDB
from servers.postgres import Postgres
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
    from the Go module proxy, and the stack adds the ``_id`` index it needs
    (``servers/ferretdb.py``).
    """

    name = "mongodb"

    def __init__(self, postgres: Postgres) -> None:
        self.ferretdb = FerretDB(postgres)

    @property
    def port(self) -> int:
        return url_port("MONGODB_URL", "mongodb://127.0.0.1:27017/streamapp", 27017)

    @staticmethod
    def mongod() -> str | None:
        return shutil.which("mongod")

    def install(self) -> None:
        if not self.mongod():
            self.ferretdb.install()

    def prepare(self) -> None:
        super().prepare()
        if not self.mongod():
            self.ferretdb.prepare(self.data)

    def command(self) -> list[str]:
        if mongod := self.mongod():
            return [mongod, "--dbpath", str(self.data), "--bind_ip", BIND_HOST, "--port", str(self.port)]
        return self.ferretdb.command(self.data, self.address)

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
