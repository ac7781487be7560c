"""Plumbing of the security tests: two known people in PostgreSQL, and a
client for a real worker that can also send bytes no HTTP client would
(``raw_get``: ``..`` segments, NUL, broken headers, huge request lines).
"""
from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Optional

import aiohttp
from yarl import URL

from harness import Worker, stores_for

#: The person whose data must never leak (seeded before the worker starts).
VICTIM = {"user_id": "u-victim-1", "email": "victim.secret@example.org",
          "display_name": "Victim Secret", "card_last4": "4242"}
#: Another person: a query that matched everyone would return both.
OTHER = {"user_id": "u-other-2", "email": "other.person@example.org",
         "display_name": "Other Person", "card_last4": "1881"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def seed_people(env: Dict[str, str]) -> None:
    """Two users with a subscription and a payment each, straight in SQL."""
    stores = stores_for(env)
    try:
        pool = await stores.postgres.pool()  # creates the schema
        now = datetime.now(timezone.utc)
        for n, person in enumerate((VICTIM, OTHER)):
            uid = person["user_id"]
            await pool.execute(
                """INSERT INTO users (user_id, email, display_name, country, birth_year,
                                      registered_at, updated_at)
                   VALUES ($1, $2, $3, 'DE', 1990, $4, $4)""",
                uid, person["email"], person["display_name"], now)
            await pool.execute(
                """INSERT INTO subscriptions (subscription_id, user_id, plan, status,
                                              price_cents, currency, started_at, updated_at)
                   VALUES ($1, $2, 'basic', 'active', 999, 'EUR', $3, $3)""",
                f"s-{uid}", uid, now)
            await pool.execute(
                """INSERT INTO payments (payment_id, event_id, user_id, subscription_id, status,
                                         amount_cents, currency, card_token, card_last4,
                                         occurred_at)
                   VALUES ($1, $2, $3, $4, 'processed', 999, 'EUR', 'tok_secret', $5, $6)""",
                f"p-{uid}", f"00000000-0000-4000-8000-00000000000{n}", uid, f"s-{uid}",
                person["card_last4"], now)
    finally:
        await stores.close()


@dataclass
class Reply:
    status: int
    headers: Dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class SecureWorker:
    base: str
    port: int
    env: Dict[str, str]
    worker: Worker
    http: aiohttp.ClientSession
    log_path: Path

    async def get(self, path: str, headers: Optional[Dict[str, str]] = None) -> Reply:
        """GET ``path`` exactly as written (percent-escapes are not re-encoded)."""
        url = URL(self.base + path, encoded=True)
        async with self.http.get(url, headers=headers or {}, allow_redirects=False) as r:
            return Reply(r.status, dict(r.headers), await r.read())

    async def raw_get(self, target: bytes, headers: bytes = b"") -> Reply:
        """Send a request line as bytes, for what an HTTP client would not send."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + headers
                         + b"Connection: close\r\n\r\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 15)
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        return Reply(status, hdrs, body)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
