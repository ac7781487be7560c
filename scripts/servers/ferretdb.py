"""FerretDB v1 on the stack's PostgreSQL, with the ``_id`` index its lookups need.

FerretDB 1.x finds documents by ``_id`` with ``_jsonb->$1 @> $2`` on the
collection's table, which its own unique B-tree on ``(_jsonb->'_id')`` cannot
serve, so every ``find``, ``update`` and ``delete`` by ``_id`` scans the
collection. The stack adds what PostgreSQL needs to use an index there:

- a GIN index on ``(_jsonb->'_id')`` on every collection table, made by an
  event trigger in FerretDB's database as FerretDB creates the table (tables
  come and go with collections, at any time), and once for tables that
  already exist;
- ``plan_cache_mode = force_custom_plan`` for that database: FerretDB runs
  prepared statements, and a generic plan of ``_jsonb->$1`` (key unknown)
  matches no index, while a custom plan sees ``_jsonb->'_id'``.

FerretDB does not know about the index (``listIndexes`` does not show it);
dropping the collection drops it with the table.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.parse
from pathlib import Path

from servers.common import CACHE, StackError, say
from servers.install import run, tool
from servers.postgres import FERRETDB_DATABASE, Postgres, quote_ident

MODULE = "github.com/FerretDB/FerretDB"
VERSION = "v1.24.2"

#: Installed in FerretDB's database before FerretDB starts; idempotent.
ID_INDEX_SQL = """
SET client_min_messages = warning;
CREATE OR REPLACE FUNCTION stack_ferretdb_id_index(target regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s USING gin ((_jsonb -> %L))',
                 left((SELECT relname FROM pg_class WHERE oid = target), 55) || '_id_gin',
                 target, '_id');
END $$;

CREATE OR REPLACE FUNCTION stack_ferretdb_id_index_on_create() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
  created record;
BEGIN
  FOR created IN SELECT objid FROM pg_event_trigger_ddl_commands()
                 WHERE command_tag = 'CREATE TABLE' AND object_type = 'table' LOOP
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = created.objid
               AND attname = '_jsonb' AND NOT attisdropped) THEN
      PERFORM stack_ferretdb_id_index(created.objid::regclass);
    END IF;
  END LOOP;
END $$;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'stack_ferretdb_id_index') THEN
    CREATE EVENT TRIGGER stack_ferretdb_id_index ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
      EXECUTE FUNCTION stack_ferretdb_id_index_on_create();
  END IF;
END $$;

SELECT stack_ferretdb_id_index(c.oid) FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = '_jsonb' AND NOT a.attisdropped
  WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema');
"""


class FerretDB:
    """How the stack builds, prepares and runs FerretDB (the ``mongodb`` service)."""

    flavour = "ferretdb"

    def __init__(self, postgres: Postgres) -> None:
        self.postgres = postgres  # FerretDB's backend

    @property
    def binary(self) -> Path:
        return CACHE / "bin" / "ferretdb"

    def install(self) -> None:
        if not self.binary.exists():
            self.build()

    def build(self) -> None:
        """Build FerretDB from its module source with build/version/version.txt added.

        `go install ...@version` builds a binary that panics at start because that
        generated file is missing (FerretDB issue #2982), so we build a patched copy.
        """
        go = tool("go", "golang-go", ("/usr/local/go/bin",))
        module = f"{MODULE}@{VERSION}"
        say(f"building FerretDB {VERSION} with Go (first time only)")
        env = {**os.environ, "GOFLAGS": "-mod=mod"}
        CACHE.mkdir(parents=True, exist_ok=True)
        info = run([go, "mod", "download", "-json", module], cwd=CACHE, env=env).stdout
        module_dir = Path(json.loads(info)["Dir"])
        source = CACHE / "ferretdb-src"
        shutil.rmtree(source, ignore_errors=True)
        shutil.copytree(module_dir, source)
        for path in [source, *source.rglob("*")]:  # the module cache is read-only
            path.chmod(path.stat().st_mode | 0o200)
        (source / "build" / "version" / "version.txt").write_text(VERSION + "\n")
        self.binary.parent.mkdir(parents=True, exist_ok=True)
        partial = self.binary.with_suffix(".partial")
        run([go, "build", "-trimpath", "-o", str(partial), "./cmd/ferretdb"], cwd=source, env=env)
        partial.replace(self.binary)  # the binary doubles as the "build complete" marker
        shutil.rmtree(source)

    def prepare(self, data: Path) -> None:
        """Index ``_id`` in FerretDB's database, before FerretDB connects.

        Needs the stack's PostgreSQL (its superuser, over its socket); with
        another PostgreSQL FerretDB still runs, without the index.  ``up``
        launches PostgreSQL just before, so this waits until it answers (on a
        fresh machine the index was skipped: the socket was not there yet).
        """
        try:
            if self.postgres.pid():
                self.postgres.wait_healthy()
            self.postgres.psql(ID_INDEX_SQL, database=FERRETDB_DATABASE)
            self.postgres.psql(f"ALTER DATABASE {quote_ident(FERRETDB_DATABASE)} "
                               "SET plan_cache_mode = force_custom_plan")
        except StackError as error:
            say(f"mongodb: could not add FerretDB's _id index, lookups by _id will scan: {error}")

    def command(self, data: Path, address: str) -> list[str]:
        pg = self.postgres
        backend = f"postgres://{urllib.parse.quote(pg.role)}@127.0.0.1:{pg.port}/{FERRETDB_DATABASE}"
        return [str(self.binary), "--handler=postgresql", f"--postgresql-url={backend}",
                f"--state-dir={data}", f"--listen-addr={address}", "--debug-addr=-",
                "--telemetry=disable", "--log-level=error"]  # warn logs every unsupported command
