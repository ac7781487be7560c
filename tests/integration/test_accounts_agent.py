"""The account agent, driven through Faust's ``test_context()``, writing to
the real PostgreSQL."""
import asyncio
from datetime import datetime, timezone

import pytest

from harness import wait_until
from streamapp import records as r
from streamapp.codec import encode, key_of

pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _id(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


async def _count(sql: str, *args) -> int:
    from streamapp.stores import stores
    pool = await stores.postgres.pool()
    return await pool.fetchval(sql, *args)


async def test_registration_then_payment_lands_in_postgres(app):
    from agents.accounts import accounts

    signup = r.UserRegistered(event_id=_id(1), occurred_at=NOW, user_id="ua1",
                              email="ana@example.com", display_name="Ana", country="BR",
                              birth_year=1990)
    sub = r.SubscriptionStarted(event_id=_id(2), occurred_at=NOW, subscription_id="sa1",
                                user_id="ua1", plan="basic", price_cents=799, currency="USD")
    pay = r.PaymentProcessed(event_id=_id(3), occurred_at=NOW, payment_id="pa1", user_id="ua1",
                             subscription_id="sa1", amount_cents=799, currency="USD",
                             card_token="tok_abcdef123456", card_last4="4242")
    async with accounts.test_context() as agent:
        for event in (signup, sub, pay, pay):  # the same payment twice: applied once
            await agent.put(encode(event), key=key_of(event), wait=False)
        assert await wait_until(lambda: _count(
            "SELECT count(*) FROM payments WHERE user_id = 'ua1'"), timeout=20, interval=0.2)
        await asyncio.sleep(0.5)
    assert await _count("SELECT count(*) FROM users WHERE user_id = 'ua1' AND NOT inferred") == 1
    assert await _count("SELECT count(*) FROM payments WHERE payment_id = 'pa1'") == 1
    assert await _count("SELECT count(*) FROM applied_events WHERE subject_id = 'ua1'") == 3


async def test_profile_updates_keep_the_last_value_of_each_field(app):
    """Updates carry only the fields they change; several in one batch are
    merged per user, each field taking the newest value (equal times: the
    greater event_id)."""
    from agents.accounts import accounts
    from streamapp.stores.postgres_accounts import _profiles

    later = NOW.replace(hour=1)
    signup = r.UserRegistered(event_id=_id(31), occurred_at=NOW, user_id="ud1",
                              email="cy@example.com", display_name="Cy", country="BR",
                              birth_year=1991)
    renamed = r.UserUpdated(event_id=_id(32), occurred_at=later, user_id="ud1",
                            display_name="Cy B", country="AR")
    moved = r.UserUpdated(event_id=_id(33), occurred_at=later, user_id="ud1", country="PT")
    for order in ([renamed, moved], [moved, renamed]):
        ((user, name, _, country, _, email, _, *_, at),) = _profiles(order)
        assert (user, name, country, email, at) == ("ud1", "Cy B", "PT", None, later)
    async with accounts.test_context() as agent:
        for event in (signup, renamed, moved):
            await agent.put(encode(event), key=key_of(event), wait=False)

        async def applied():
            return await _count(
                "SELECT count(*) FROM applied_events WHERE subject_id = 'ud1'") == 3
        assert await wait_until(applied, timeout=20, interval=0.2)
    assert await _count("SELECT count(*) FROM users WHERE user_id = 'ud1' AND display_name ="
                        " 'Cy B' AND country = 'PT' AND email = 'cy@example.com'"
                        " AND updated_at = $1", later) == 1


async def test_a_payment_before_its_sign_up_is_kept_and_completed_later(app):
    """Early events are not dropped: the user and subscription are inferred,
    then filled in when their own events arrive."""
    from agents.accounts import accounts

    pay = r.PaymentFailed(event_id=_id(11), occurred_at=NOW, payment_id="pb1", user_id="ub1",
                          subscription_id="sb1", amount_cents=1299, currency="USD",
                          card_token="tok_abcdefghijkl", card_last4="0005",
                          failure_reason="expired_card")
    async with accounts.test_context() as agent:
        await agent.put(encode(pay), key=key_of(pay), wait=False)
        assert await wait_until(lambda: _count(
            "SELECT count(*) FROM payments WHERE payment_id = 'pb1'"), timeout=20, interval=0.2)
    assert await _count("SELECT count(*) FROM users WHERE user_id = 'ub1' AND inferred") == 1
    assert await _count(
        "SELECT count(*) FROM subscriptions WHERE subscription_id = 'sb1' AND status = 'inferred'") == 1

    signup = r.UserRegistered(event_id=_id(12), occurred_at=NOW, user_id="ub1",
                              email="bo@example.com", display_name="Bo", country="PT",
                              birth_year=1985)
    sub = r.SubscriptionStarted(event_id=_id(13), occurred_at=NOW, subscription_id="sb1",
                                user_id="ub1", plan="standard", price_cents=1299, currency="USD")
    async with accounts.test_context() as agent:
        await agent.put(encode(signup), key=key_of(signup), wait=False)
        await agent.put(encode(sub), key=key_of(sub), wait=False)

        async def completed():
            return await _count("SELECT count(*) FROM subscriptions WHERE subscription_id = 'sb1'"
                                " AND status = 'active' AND plan = 'standard'")
        assert await wait_until(completed, timeout=20, interval=0.2)
    assert await _count("SELECT count(*) FROM users WHERE user_id = 'ub1' AND NOT inferred") == 1


async def test_hostile_strings_are_stored_verbatim_never_executed(app):
    """Parameterised SQL and typed MongoDB updates: injection payloads are just text."""
    from agents.accounts import accounts
    from streamapp.stores import stores

    hostile = "Robert'); DROP TABLE users;-- {\"$gt\": \"\"} $where"
    signup = r.UserRegistered(event_id=_id(21), occurred_at=NOW, user_id="uc1",
                              email="eve@example.com", display_name=hostile, country="US",
                              birth_year=1970)
    pref = r.PreferenceSet(event_id=_id(22), occurred_at=NOW, user_id="uc1", key="language",
                           value="$ne; DELETE FROM preferences")
    async with accounts.test_context() as agent:
        await agent.put(encode(signup), key=key_of(signup), wait=False)
        await agent.put(encode(pref), key=key_of(pref), wait=False)
        assert await wait_until(lambda: _count(
            "SELECT count(*) FROM preferences WHERE user_id = 'uc1'"), timeout=20, interval=0.2)
    pool = await stores.postgres.pool()
    assert await pool.fetchval("SELECT display_name FROM users WHERE user_id = 'uc1'") == hostile
    assert await pool.fetchval("SELECT value FROM preferences WHERE user_id = 'uc1'") == \
        "$ne; DELETE FROM preferences"
    assert await _count("SELECT count(*) FROM users") >= 1
