"""Apply PostgreSQL migrations as the schema's owner: ``python -m streamapp.migrate``.

Connects with ``POSTGRES_MIGRATE_DSN`` (or ``POSTGRES_DSN`` when that is
unset), applies the SQL files the database has not seen, then grants the
worker's role (the user of ``POSTGRES_DSN``, when it is another role) what
the worker needs and nothing more:

- USAGE on the schema (no CREATE: no new tables, no DDL),
- SELECT, INSERT, UPDATE, DELETE on the app's tables (the worker never
  truncates, drops or alters; it cannot, since it owns nothing),
- USAGE and SELECT on the sequences,
- SELECT only on ``schema_migrations``: a worker checks the version there.

The grants are repeated on every run, so tables added by a new migration
are covered.  ``make run``, docker-compose and the tests run this before any
worker starts; a worker that finds migrations missing waits and says so.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import urllib.parse
from typing import List, Optional

import asyncpg

from .config import Settings, settings
from .connections import redact
from .stores.postgres import migrate

log = logging.getLogger("streamapp.migrate")

#: What the worker role may do with each table of ours.
WORKER_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"


def dsn_user(dsn: str) -> Optional[str]:
    """The role a URL-style DSN logs in as (None when it names none)."""
    user = urllib.parse.urlsplit(dsn).username
    return urllib.parse.unquote(user) if user else None


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def grant_worker(conn: asyncpg.Connection, role: str) -> None:
    """Give ``role`` the worker's privileges on everything in our schema."""
    schema = quote_ident(await conn.fetchval("SELECT current_schema()"))
    who = quote_ident(role)
    async with conn.transaction():
        # PostgreSQL 14 and older let everyone create in "public"; not our worker.
        await conn.execute(f"REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC")
        await conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {who}")
        await conn.execute(f"GRANT {WORKER_TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA {schema} TO {who}")
        await conn.execute(f"REVOKE INSERT, UPDATE, DELETE ON {schema}.schema_migrations FROM {who}")
        await conn.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {who}")


async def run(cfg: Settings = settings, wait_s: float = 0.0) -> List[str]:
    """Migrate, then grant the worker role; retry connecting for ``wait_s`` seconds."""
    owner_dsn = cfg.postgres_migrate_dsn or cfg.postgres_dsn
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn = await asyncpg.connect(owner_dsn, timeout=10)
            break
        except (TimeoutError, OSError, asyncpg.CannotConnectNowError) as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("PostgreSQL not reachable (%s); retrying", type(exc).__name__)
            await asyncio.sleep(1.0)
    try:
        applied = await migrate(conn)
        worker = dsn_user(cfg.postgres_dsn)
        owner = await conn.fetchval("SELECT current_user")
        if cfg.postgres_migrate_dsn and worker and worker != owner:
            await grant_worker(conn, worker)
            log.info("granted %s the worker's privileges", worker)
    finally:
        await conn.close()
    return applied


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streamapp.migrate", description=__doc__.split("\n")[0])
    parser.add_argument("--wait", type=float, default=30.0,
                        help="keep trying to connect for this many seconds (default 30)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(levelname)s %(message)s")
    try:
        applied = asyncio.run(run(settings, args.wait))
    except Exception as exc:  # one line, never the DSN's password
        print(f"migrate: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        return 1
    print(f"migrate: {'applied ' + ', '.join(applied) if applied else 'schema up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
