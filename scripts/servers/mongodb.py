"""MongoDB's wire protocol: a real mongod, SecantusDB or FerretDB, chosen by MONGODB_SERVER.

MongoDB itself is in no package registry the stack can reach, so unless a
``mongod`` is on PATH the ``mongodb`` service is a stand-in:

- ``secantus``: SecantusDB, built from crates.io
  (``servers/secantus.py``);
- ``ferretdb``: FerretDB 1.x on the stack's PostgreSQL, built from the Go
  module proxy, with the ``_id`` index the stack adds (``servers/ferretdb.py``).

``MONGODB_SERVER=auto`` (or unset) takes ``mongod`` when there is one, else
the default stand-in; bench/README.md, "MongoDB stand-in", has the numbers
behind the default. The app is the same against all of them: it speaks
standard MongoDB and relies on nothing a stand-in does differently.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Protocol

from servers.common import BIND_HOST, StackError, say, url_port
from servers.ferretdb import FerretDB
from servers.postgres import Postgres
from servers.process import Server, proc_cmdline
from servers.secantus import Secantus

#: Values of MONGODB_SERVER besides "auto".
FLAVOURS = ("mongod", "secantus", "ferretdb")
#: What "auto" runs when there is no mongod on PATH.
DEFAULT_STANDIN = "ferretdb"


class Flavour(Protocol):
    flavour: str

    @property
    def binary(self) -> Path: ...

    def install(self) -> None: ...

    def prepare(self, data: Path) -> None: ...

    def command(self, data: Path, address: str) -> list[str]: ...


class Mongod:
    """A real mongod from PATH (installed by whoever has one)."""

    flavour = "mongod"

    @property
    def binary(self) -> Path:
        found = shutil.which("mongod")
        if not found:
            raise StackError("MONGODB_SERVER=mongod, but there is no mongod on PATH")
        return Path(found)

    def install(self) -> None:
        """Nothing to install; fails early when there is no mongod."""
        if not self.binary.exists():
            raise StackError(f"{self.binary} is gone")

    def prepare(self, data: Path) -> None:
        pass

    def command(self, data: Path, address: str) -> list[str]:
        port = address.rsplit(":", 1)[1]
        return [str(self.binary), "--dbpath", str(data), "--bind_ip", BIND_HOST, "--port", port]


def chosen_flavour() -> str:
    """The MONGODB_SERVER setting, with "auto" resolved."""
    value = (os.environ.get("MONGODB_SERVER") or "auto").strip().lower()
    if value == "auto":
        return "mongod" if shutil.which("mongod") else DEFAULT_STANDIN
    if value not in FLAVOURS:
        raise StackError(f"MONGODB_SERVER={value!r}: choose one of auto, {', '.join(FLAVOURS)}")
    return value


class MongoDB(Server):
    """The ``mongodb`` service: whichever server MONGODB_SERVER selects.

    Every flavour runs from (and names in its command line) ``data/mongodb``:
    mongod's dbpath, FerretDB's state dir, SecantusDB's storage under
    ``secantus/``. So ``down`` finds the running one even after the setting
    changed; ``up`` says so when the running one is not the selected one.
    """

    name = "mongodb"

    def __init__(self, postgres: Postgres) -> None:
        self.flavours: dict[str, Flavour] = {
            "mongod": Mongod(), "secantus": Secantus(), "ferretdb": FerretDB(postgres)}

    @property
    def flavour(self) -> Flavour:
        return self.flavours[chosen_flavour()]

    @property
    def port(self) -> int:
        return url_port("MONGODB_URL", "mongodb://127.0.0.1:27017/streamapp", 27017)

    def install(self) -> None:
        self.flavour.install()

    def prepare(self) -> None:
        super().prepare()
        self.flavour.prepare(self.data)

    def command(self) -> list[str]:
        return self.flavour.command(self.data, self.address)

    def signature(self) -> str:
        return str(self.data)

    def start(self) -> bool:
        if (pid := self.pid()) and self.flavour.flavour != self.running_flavour(pid):
            say(f"{self.name}: {self.running_flavour(pid)} runs (pid {pid}), but MONGODB_SERVER selects "
                f"{self.flavour.flavour}; `stack.py down mongodb` first to switch")
        return super().start()

    def running_flavour(self, pid: int) -> str:
        binary = Path((proc_cmdline(pid) or "").split(" ", 1)[0]).name
        return {"ferretdb": "ferretdb", "secantusd-rs": "secantus"}.get(binary, "mongod")

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
        if "ferretdbVersion" in info:
            flavour = f"FerretDB {info['ferretdbVersion']}"
        elif "secantusVersion" in info:
            flavour = f"SecantusDB {info['secantusVersion']}"
        else:
            flavour = f"MongoDB {info['version']}"
        return f"ping ok, {flavour}, {ms:.0f} ms"
