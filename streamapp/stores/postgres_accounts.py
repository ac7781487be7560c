"""PostgreSQL writes of the account topics (users, subscriptions, payments,
preferences): claimed once each in the ``applied_events`` ledger, then one
set-based statement per kind of change, "newest wins" throughout
(``codec.version``), so batching and order do not change the result."""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterable, List, Sequence, Tuple, Union

import asyncpg

from ..codec import version
from ..records import Event

#: A connection of its own or one lent by the pool.
Conn = Union[asyncpg.Connection, asyncpg.pool.PoolConnectionProxy]

#: A batch's fresh account events by event type.
ByType = Dict[str, List[Event]]


def columns(events: Iterable[Event], *names: str) -> List[list]:
    events = list(events)
    return [[getattr(e, n) for e in events] for n in names]


async def claim(conn: Conn, events: Sequence[Event]) -> List[Event]:
    """Record events in the ledger; return those not applied before, in order."""
    rows = await conn.fetch(
        """INSERT INTO applied_events (event_id, event_type, subject_id, occurred_at)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
           ON CONFLICT (event_id) DO NOTHING RETURNING event_id""",
        [e.event_id for e in events], [e.TYPE for e in events],
        [e.user_id for e in events], [e.occurred_at for e in events])
    fresh_ids = {str(r["event_id"]) for r in rows}
    seen: set = set()
    fresh = []
    for e in events:  # keep stream order; drop in-batch duplicates too
        if e.event_id in fresh_ids and e.event_id not in seen:
            seen.add(e.event_id)
            fresh.append(e)
    return fresh


def _last_per(events: Iterable[Event], *key_fields: str) -> List[Event]:
    """The last event per key (stream order is the order of truth)."""
    latest: Dict[tuple, Event] = {}
    for e in events:
        latest[tuple(getattr(e, f) for f in key_fields)] = e
    return list(latest.values())


def _newest_per(events: Iterable[Event], *key_fields: str) -> List[Tuple[str, Event]]:
    """(version, event) of the newest event per key ("newest wins", see
    ``codec.version``): the same whichever order the events came in."""
    newest: Dict[tuple, Tuple[str, Event]] = {}
    for e in events:
        key = tuple(getattr(e, f) for f in key_fields)
        v = version(e)
        if key not in newest or v > newest[key][0]:
            newest[key] = (v, e)
    return list(newest.values())


async def infer_users(conn: Conn, user_ids: set, events: Sequence[Event]) -> None:
    """Create placeholder users that events refer to before their sign-up arrives."""
    if not user_ids:
        return
    now = max(e.occurred_at for e in events)
    await conn.execute(
        """INSERT INTO users (user_id, inferred, updated_at)
           SELECT u, true, $2 FROM unnest($1::text[]) AS u
           ON CONFLICT (user_id) DO NOTHING""", sorted(user_ids), now)


#: Profile fields that a sign-up sets and an update may change.
_PROFILE = ("display_name", "country", "email")


def _profiles(events: Iterable[Event]) -> List[list]:
    """One row per user: for each profile field its newest (value, version),
    the newest sign-up's (birth_year, registered_at, version), and the
    newest time seen.

    A sign-up sets every field, an update the fields it carries; each field
    ends with the value of the newest event that set it, whatever order or
    batches the events came in (the SQL keeps a field's version with it).
    """
    rows: Dict[str, list] = {}
    for e in events:
        # user_id, (display_name, v), (country, v), (email, v), birth_year,
        # registered_at, registered_v, at
        row = rows.setdefault(e.user_id, [e.user_id, None, None, None, None, None, None,
                                          None, None, None, e.occurred_at])
        v = version(e)
        for i, name in enumerate(_PROFILE):
            value = getattr(e, name)
            if value is not None and (row[2 + 2 * i] is None or v > row[2 + 2 * i]):
                row[1 + 2 * i], row[2 + 2 * i] = value, v
        if e.TYPE == "user.registered" and (row[9] is None or v > row[9]):
            row[7], row[8], row[9] = e.birth_year, e.occurred_at, v
        row[10] = max(row[10], e.occurred_at)
    return list(rows.values())


def _newer(column: str, table: str = "u") -> str:
    """SQL: the incoming version of ``column`` outranks the stored one."""
    return f'EXCLUDED.{column}_v > COALESCE({table}.{column}_v, \'\') COLLATE "C"'


def _take_if_newer(part: str, *columns: str) -> str:
    cond = _newer(part)
    return ",\n".join(f"{c} = CASE WHEN {cond} THEN EXCLUDED.{c} ELSE u.{c} END"
                      for c in (*columns, f"{part}_v"))


_UPSERT_PROFILES = f"""
    INSERT INTO users AS u (user_id, display_name, display_name_v, country, country_v,
                            email, email_v, birth_year, registered_at, registered_v,
                            inferred, updated_at)
    SELECT r.user_id, r.display_name, r.display_name_v, r.country, r.country_v,
           r.email, r.email_v, r.birth_year, r.registered_at, r.registered_v,
           r.registered_v IS NULL, r.at
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::int[], $9::timestamptz[], $10::text[], $11::timestamptz[])
        AS r(user_id, display_name, display_name_v, country, country_v, email, email_v,
             birth_year, registered_at, registered_v, at)
    ON CONFLICT (user_id) DO UPDATE SET
    {_take_if_newer("display_name", "display_name")},
    {_take_if_newer("country", "country")},
    {_take_if_newer("email", "email")},
    {_take_if_newer("registered", "birth_year", "registered_at")},
    inferred = u.inferred AND EXCLUDED.registered_v IS NULL,
    updated_at = GREATEST(u.updated_at, EXCLUDED.updated_at)"""


async def apply_accounts(conn: Conn, events: List[Event]) -> None:
    """Apply fresh account events, one statement per kind.

    Whatever a later event replaces (a profile field, a subscription's plan,
    its start or cancellation, a preference) is decided by "newest wins"
    (``codec.version``), within the batch here and against what is stored
    in SQL, so batching and order do not change the result.
    """
    by_type: ByType = defaultdict(list)
    for e in events:
        by_type[e.TYPE].append(e)
    await _upsert_profiles(conn, by_type)
    await infer_users(conn, {e.user_id for e in events
                              if e.TYPE not in ("user.registered", "user.updated")}, events)
    await _start_subscriptions(conn, by_type)
    await _change_subscriptions(conn, by_type)
    await _cancel_subscriptions(conn, by_type)
    await _insert_payments(conn, by_type)
    await _set_preferences(conn, by_type)


async def _upsert_profiles(conn: Conn, by_type: ByType) -> None:
    """Sign-ups and profile updates: each field takes its newest value."""
    profiles = _profiles(by_type["user.registered"] + by_type["user.updated"])
    if profiles:
        await conn.execute(_UPSERT_PROFILES,
                           *[[row[i] for row in profiles] for i in range(11)])


async def _start_subscriptions(conn: Conn, by_type: ByType) -> None:
    """Started subscriptions, and placeholders for those that other events
    refer to before their start arrives."""
    started = _newest_per(by_type["subscription.started"], "subscription_id")
    if started:
        await conn.execute(
            """INSERT INTO subscriptions AS s (subscription_id, user_id, plan, status,
                   price_cents, currency, started_at, updated_at, plan_v, started_v)
               SELECT r.subscription_id, r.user_id, r.plan, 'active', r.price_cents,
                      r.currency, r.at, r.at, r.v, r.v
               FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[],
                           $6::timestamptz[], $7::text[])
                   AS r(subscription_id, user_id, plan, price_cents, currency, at, v)
               ON CONFLICT (subscription_id) DO UPDATE SET
                   plan = CASE WHEN EXCLUDED.plan_v > COALESCE(s.plan_v, '') COLLATE "C"
                               THEN EXCLUDED.plan ELSE s.plan END,
                   price_cents = CASE WHEN EXCLUDED.plan_v > COALESCE(s.plan_v, '') COLLATE "C"
                                      THEN EXCLUDED.price_cents ELSE s.price_cents END,
                   currency = CASE WHEN EXCLUDED.plan_v > COALESCE(s.plan_v, '') COLLATE "C"
                                   THEN EXCLUDED.currency ELSE s.currency END,
                   plan_v = GREATEST(EXCLUDED.plan_v COLLATE "C", s.plan_v),
                   started_at = CASE WHEN EXCLUDED.started_v > COALESCE(s.started_v, '') COLLATE "C"
                                     THEN EXCLUDED.started_at ELSE s.started_at END,
                   started_v = GREATEST(EXCLUDED.started_v COLLATE "C", s.started_v),
                   status = CASE WHEN s.status = 'inferred' THEN 'active' ELSE s.status END,
                   updated_at = GREATEST(s.updated_at, EXCLUDED.updated_at)""",
            *columns([e for _, e in started], "subscription_id", "user_id", "plan",
                      "price_cents", "currency", "occurred_at"), [v for v, _ in started])
    subs_referenced = [e for t in ("subscription.changed", "subscription.cancelled",
                                   "payment.processed", "payment.failed")
                       for e in by_type[t]]
    if subs_referenced:
        inferred = _last_per(subs_referenced, "subscription_id")
        await conn.execute(
            """INSERT INTO subscriptions (subscription_id, user_id, plan, status,
                   price_cents, currency, updated_at)
               SELECT r.sid, r.uid, 'unknown', 'inferred', 0, 'XXX', r.at
               FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS r(sid, uid, at)
               ON CONFLICT (subscription_id) DO NOTHING""",
            *columns(inferred, "subscription_id", "user_id", "occurred_at"))


async def _change_subscriptions(conn: Conn, by_type: ByType) -> None:
    """Plan changes, newest wins."""
    changed = _newest_per(by_type["subscription.changed"], "subscription_id")
    if changed:
        await conn.execute(
            """UPDATE subscriptions s SET plan = r.plan, price_cents = r.price_cents,
                      currency = r.currency, plan_v = r.v,
                      updated_at = GREATEST(s.updated_at, r.at)
               FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::timestamptz[],
                           $6::text[])
                   AS r(sid, plan, price_cents, currency, at, v)
               WHERE s.subscription_id = r.sid
                 AND r.v > COALESCE(s.plan_v, '') COLLATE "C" """,
            *columns([e for _, e in changed], "subscription_id", "plan", "price_cents",
                      "currency", "occurred_at"), [v for v, _ in changed])


async def _cancel_subscriptions(conn: Conn, by_type: ByType) -> None:
    """Cancellations, newest reason and time win."""
    cancelled = _newest_per(by_type["subscription.cancelled"], "subscription_id")
    if cancelled:
        await conn.execute(
            """UPDATE subscriptions s SET status = 'cancelled',
                      cancelled_at = CASE WHEN r.v > COALESCE(s.cancel_v, '') COLLATE "C"
                                          THEN r.at ELSE s.cancelled_at END,
                      cancel_reason = CASE WHEN r.v > COALESCE(s.cancel_v, '') COLLATE "C"
                                           THEN r.reason ELSE s.cancel_reason END,
                      cancel_v = GREATEST(r.v COLLATE "C", s.cancel_v),
                      updated_at = GREATEST(s.updated_at, r.at)
               FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[])
                   AS r(sid, reason, at, v)
               WHERE s.subscription_id = r.sid""",
            *columns([e for _, e in cancelled], "subscription_id", "reason", "occurred_at"),
            [v for v, _ in cancelled])


async def _insert_payments(conn: Conn, by_type: ByType) -> None:
    """Payments, once each by ``payment_id``."""
    payments = by_type["payment.processed"] + by_type["payment.failed"]
    if payments:
        await conn.execute(
            """INSERT INTO payments (payment_id, event_id, user_id, subscription_id, status,
                   amount_cents, currency, card_token, card_last4, failure_reason, occurred_at)
               SELECT r.pid, r.eid, r.uid, r.sid, r.status, r.amount, r.currency, r.token,
                      r.last4, r.reason, r.at
               FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                           $6::int[], $7::text[], $8::text[], $9::text[], $10::text[],
                           $11::timestamptz[])
                   AS r(pid, eid, uid, sid, status, amount, currency, token, last4, reason, at)
               ON CONFLICT (payment_id) DO NOTHING""",
            [e.payment_id for e in payments], [e.event_id for e in payments],
            [e.user_id for e in payments], [e.subscription_id for e in payments],
            [e.TYPE.split(".")[1] for e in payments], [e.amount_cents for e in payments],
            [e.currency for e in payments], [e.card_token for e in payments],
            [e.card_last4 for e in payments],
            [getattr(e, "failure_reason", None) for e in payments],
            [e.occurred_at for e in payments])


async def _set_preferences(conn: Conn, by_type: ByType) -> None:
    """Preferences, newest wins per (user, key)."""
    prefs = _newest_per(by_type["preference.set"], "user_id", "key")
    if prefs:
        await conn.execute(
            """INSERT INTO preferences AS p (user_id, key, value, updated_at, v)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],
                                    $5::text[])
               ON CONFLICT (user_id, key) DO UPDATE SET value = EXCLUDED.value,
                   updated_at = EXCLUDED.updated_at, v = EXCLUDED.v
               WHERE EXCLUDED.v > COALESCE(p.v, '') COLLATE "C" """,
            *columns([e for _, e in prefs], "user_id", "key", "value", "occurred_at"),
            [v for v, _ in prefs])
