"""PostgreSQL: Debian's server on a data dir of its own, the app's roles and databases."""

from __future__ import annotations

import functools
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

from servers.common import BIND_HOST, DATA, RUN, STACK, StackError, say, stack_secret
from servers.install import apt_install, run
from servers.process import Server

#: The PostgreSQL database FerretDB keeps its collections in.
FERRETDB_DATABASE = "ferretdb"


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

    @functools.cached_property
    def elsewhere(self) -> Path | None:
        """Where PostgreSQL's data dir and socket go when the postgres user
        cannot reach the stack's directory (a checkout under a private
        directory, such as ``mktemp -d`` makes as root): a directory of the
        stack's own under that user's home; None when the stack's is fine."""
        if not self.run_as:
            return None
        try:
            home = Path(pwd.getpwnam(self.run_as).pw_dir)
        except KeyError:  # not installed yet
            return None
        if subprocess.run(["test", "-x", str(STACK.parent)], user=self.run_as).returncode == 0:
            return None
        return home / "streamapp-stacks" / hashlib.sha256(str(STACK).encode()).hexdigest()[:12]

    @property
    def data(self) -> Path:
        return self.elsewhere / "data" if self.elsewhere else DATA / self.name

    @property
    def socket_dir(self) -> Path:
        return self.elsewhere / "socket" if self.elsewhere else RUN / "postgres-socket"

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
        if self.elsewhere:
            say(f"postgres: user {self.run_as!r} cannot reach {STACK}; its data and socket "
                f"live in {self.elsewhere}")
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

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the private unix socket."""
        return run([str(self.bindir() / "psql"), "-h", str(self.socket_dir), "-p", str(self.port),
                    "-U", self.superuser, "-d", database, "-v", "ON_ERROR_STOP=1", "-tAc", sql]).stdout.strip()

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
