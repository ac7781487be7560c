"""``/api/users/{user_id}/``: a user's PostgreSQL records (personal data)."""
from __future__ import annotations

from typing import Any, Dict, Optional

from faust.web import Request, Response

from ..stores import stores
from .api import ApiView, NotFound, from_store, iso, plain
from .params import valid_id

_USER_SQL = """SELECT user_id, email, display_name, country, birth_year, inferred,
                      registered_at, updated_at
               FROM users WHERE user_id = $1"""
_SUBSCRIPTIONS_SQL = """SELECT subscription_id, plan, status, price_cents, currency,
                               started_at, cancelled_at, cancel_reason, updated_at
                        FROM subscriptions WHERE user_id = $1
                        ORDER BY updated_at DESC, subscription_id LIMIT 50"""
_PREFERENCES_SQL = """SELECT key, value, updated_at FROM preferences
                      WHERE user_id = $1 ORDER BY key"""
# Card data never leaves the database: the token is not selected at all.
_PAYMENTS_SQL = """SELECT payment_id, subscription_id, status, amount_cents, currency,
                          card_last4, failure_reason, occurred_at
                   FROM payments WHERE user_id = $1
                   ORDER BY occurred_at DESC, payment_id DESC LIMIT 10"""


async def _user(user_id: str) -> Optional[Dict[str, Any]]:
    pool = await stores.postgres.pool()
    async with pool.acquire() as conn:
        # One snapshot for the four reads, so they agree with each other.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            user = await conn.fetchrow(_USER_SQL, user_id)
            if user is None:
                return None
            subs = await conn.fetch(_SUBSCRIPTIONS_SQL, user_id)
            prefs = await conn.fetch(_PREFERENCES_SQL, user_id)
            payments = await conn.fetch(_PAYMENTS_SQL, user_id)
    subscriptions = [plain(s) for s in subs]
    return {
        **plain(user),
        "current_subscriptions": [s for s in subscriptions if s["status"] == "active"],
        "subscriptions": subscriptions,
        "preferences": {p["key"]: {"value": p["value"], "updated_at": iso(p["updated_at"])}
                        for p in prefs},
        "payments": [plain(p) for p in payments],
    }


class UserView(ApiView):
    personal = True
    params = frozenset()

    async def handle(self, request: Request, user_id: str) -> Response:
        valid_id(user_id, "user_id")
        found = await from_store("postgres", _user(user_id))
        if found is None:
            raise NotFound(f"no user {user_id}")
        return self.json(found)
