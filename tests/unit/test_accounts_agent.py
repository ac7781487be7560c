"""The account agents, driven through Faust's ``test_context()``, writing to
the real PostgreSQL."""
import asyncio
from datetime import datetime, timezone


from harness import wait_until
from streamapp import records as r
from streamapp.codec import encode, key_of

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


async def _count(sql: str, *args) -> int:
    from streamapp.stores import stores
    pool = await stores.postgres.pool()
    return await pool.fetchval(sql, *args)


async def test_registration_then_payment_lands_in_postgres(app):
    from agents.accounts import payments, subscriptions, users

    signup = r.UserRegistered(event_id=_id(1), occurred_at=NOW, user_id="ua1",
                              email="ana@example.com", display_name="Ana", country="BR",
                              birth_year=1990)
    sub = r.SubscriptionStarted(event_id=_id(2), occurred_at=NOW, subscription_id="sa1",
                                user_id="ua1", plan="basic", price_cents=799, currency="USD")
    pay = r.PaymentProcessed(event_id=_id(3), occurred_at=NOW, payment_id="pa1", user_id="ua1",
                             subscription_id="sa1", amount_cents=799, currency="USD",
                             card_token="tok_abcdef123456", card_last4="4242")
    async with users.test_context() as u, subscriptions.test_context() as s, \
            payments.test_context() as p:
        await u.put(encode(signup), key=key_of(signup), wait=False)
        await s.put(encode(sub), key=key_of(sub), wait=False)
        await p.put(encode(pay), key=key_of(pay), wait=False)
        # the same payment again: applied once
        await p.put(encode(pay), key=key_of(pay), wait=False)
        assert await wait_until(lambda: _count(
            "SELECT count(*) FROM payments WHERE user_id = 'ua1'"), timeout=20, interval=0.2)
        await asyncio.sleep(0.5)
    assert await _count("SELECT count(*) FROM users WHERE user_id = 'ua1' AND NOT inferred") == 1
    assert await _count("SELECT count(*) FROM payments WHERE payment_id = 'pa1'") == 1
    assert await _count("SELECT count(*) FROM applied_events WHERE subject_id = 'ua1'") == 3
