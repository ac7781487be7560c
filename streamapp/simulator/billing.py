"""Subscriptions and billing in the simulated world (a part of ``World``).

A user has at most one active subscription.  It is charged when it starts
and then every billing period while it is active; a failed charge is retried
a day later (half of them fail again), and the third failure in a row
cancels it (``payment_failed``).
A cancelled subscription is never charged again: its pending charge is
dropped when it comes due.
"""
from __future__ import annotations

import random
import string
from typing import Callable, Dict, Iterator, Optional

from .. import records as r
from .catalog import DAY

PRICES = {"basic": 799, "standard": 1299, "premium": 1799}
PLAN_SHARE = {"basic": 3, "standard": 5, "premium": 2}
BILLING_PERIOD_S = 30 * DAY
RETRY_S = DAY
MAX_FAILURES = 3
FAIL_SHARE = 0.08        # of charges fail ...
RETRY_FAIL_SHARE = 0.5   # ... and half the retries too (an expired card stays expired)


class Billing:
    """Needs ``rng``, ``clock``, ``billing_period_s``, ``_base``, ``_user``,
    ``_rating``, ``_schedule`` and ``_serial`` from ``World``."""

    rng: random.Random
    clock: float
    billing_period_s: float
    active_subs: Dict[str, list]       # sid -> [user, plan, failures in a row]
    subscription_of: Dict[str, str]    # user -> active sid
    _base: Callable[[], dict]
    _user: Callable[[], str]
    _rating: Callable[[], r.Event]
    _schedule: Callable[[float, str, object], None]
    _serial: Iterator[int]

    def _subscription(self) -> r.Event:
        for _ in range(8):
            user = self._user()
            if user not in self.subscription_of:
                break
        else:
            return self._rating()  # (nearly) everyone subscribes already
        plan = self.rng.choices(list(PLAN_SHARE), list(PLAN_SHARE.values()))[0]
        sid = f"s{next(self._serial):07d}"
        self.active_subs[sid] = [user, plan, 0]
        self.subscription_of[user] = sid
        self._schedule(self.clock + 5.0, "pay", sid)  # the first charge, right away
        return r.SubscriptionStarted(**self._base(), subscription_id=sid, user_id=user,
                                     plan=plan, price_cents=PRICES[plan], currency="USD")

    def _pick_sub(self) -> Optional[str]:
        return self.rng.choice(list(self.active_subs)) if self.active_subs else None

    def _subscription_change(self) -> r.Event:
        sid = self._pick_sub()
        if sid is None:
            return self._subscription()
        sub = self.active_subs[sid]
        sub[1] = self.rng.choice([p for p in sorted(PRICES) if p != sub[1]])
        return r.SubscriptionChanged(**self._base(), subscription_id=sid, user_id=sub[0],
                                     plan=sub[1], price_cents=PRICES[sub[1]], currency="USD")

    def _cancel(self, sid: Optional[str] = None, reason: Optional[str] = None) -> r.Event:
        sid = sid or self._pick_sub()
        if sid is None:
            return self._subscription()
        user = self.active_subs.pop(sid)[0]
        del self.subscription_of[user]
        return r.SubscriptionCancelled(**self._base(), subscription_id=sid, user_id=user,
                                       reason=reason or self.rng.choice(
                                           ["price", "content", "moved"]))

    def _due_pay(self, due: float, sid: str) -> Optional[r.Event]:
        sub = self.active_subs.get(sid)
        if sub is None:
            return None  # cancelled: no more charges
        user, plan, failures = sub
        fields = dict(self._base(), payment_id=f"p{next(self._serial):07d}", user_id=user,
                      subscription_id=sid, amount_cents=PRICES[plan], currency="USD",
                      card_token=self._card_token(),
                      card_last4=f"{self.rng.randrange(10000):04d}")
        if self.rng.random() < (RETRY_FAIL_SHARE if failures else FAIL_SHARE):
            sub[2] = failures + 1
            if sub[2] >= MAX_FAILURES:
                self._schedule(due + 60.0, "lapse", sid)
            else:
                self._schedule(due + RETRY_S, "pay", sid)
            return r.PaymentFailed(**fields, failure_reason=self.rng.choice(
                ["insufficient_funds", "expired_card", "do_not_honor"]))
        sub[2] = 0
        self._schedule(due + self.billing_period_s, "pay", sid)
        return r.PaymentProcessed(**fields)

    def _due_lapse(self, due: float, sid: str) -> Optional[r.Event]:
        return self._cancel(sid, "payment_failed") if sid in self.active_subs else None

    def _card_token(self) -> str:
        """A processor token: letters only, so it can never look like a card number."""
        return "tok_" + "".join(self.rng.choice(string.ascii_letters) for _ in range(16))

