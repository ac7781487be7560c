"""A small simulated platform that emits plausible events (S1).

The world keeps just enough state for referential integrity: ratings and
sessions name users and titles that exist, payments follow subscriptions,
sessions start before they beat and end.  Title popularity is Zipf-like, so
leaderboards have a clear head and a long tail.  Everything random comes from
one seeded generator: the same seed gives the same events (ids included).
Timestamps are the wall clock at production, or, with ``--epoch``, that
epoch plus 10 ms per event, which makes the stream identical byte for byte.
"""
from __future__ import annotations

import bisect
import itertools
import random
import string
import uuid
from datetime import datetime, timedelta, timezone
from typing import Dict, Iterator, List, Optional, Tuple

from faker import Faker

from .. import records as r
from ..records import GENRES
from ..codec import PLANS
from ..topics import STREAM_OF_TYPE
from .malformed import malformed_rating
from .outcome import Outcome, summarize

PRICES = {"basic": 799, "standard": 1299, "premium": 1799}
DEVICES = ["tv", "web", "ios", "android", "console"]
PREF_KEYS = ["language", "subtitles", "autoplay", "maturity", "quality"]
PREF_VALUES = {"language": ["en", "pt", "es", "fr", "de"], "subtitles": ["on", "off"],
               "autoplay": ["on", "off"], "maturity": ["kids", "teen", "adult"],
               "quality": ["auto", "hd", "4k"]}

#: The steady-state mix (after the catalog is loaded): many sessions and
#: ratings, fewer sign-ups, rare catalog edits.
MIX = {
    "session": 46, "rating": 30, "preference": 5, "signup": 5, "user_update": 1,
    "subscription": 4, "payment": 6, "subscription_change": 1, "cancel": 1,
    "title_edit": 0.8, "title_remove": 0.2,
}


class World:
    def __init__(self, seed: int, users: int, titles: int, bad_share: float = 0.0,
                 epoch: Optional[datetime] = None) -> None:
        self.rng = random.Random(seed)
        self.fake = Faker()
        self.fake.seed_instance(seed)
        self.max_users = users
        self.n_titles = titles
        self.bad_share = bad_share
        self.fixed_epoch = epoch is not None
        self.epoch = epoch or datetime.now(timezone.utc)
        self.tick = 0
        self.outcome = Outcome()
        self.users: List[str] = []
        self.active_subs: Dict[str, Tuple[str, str]] = {}  # sid -> (user, plan)
        self.open_sessions: Dict[str, Tuple[str, str, int]] = {}  # sid -> (user, movie, pos)
        self.titles: List[str] = [f"m{i:05d}" for i in range(titles)]
        self.live_titles: List[str] = []
        # Zipf-like popularity over title rank (s = 1.1).
        self._cum = list(itertools.accumulate(1 / (k ** 1.1) for k in range(1, titles + 1)))
        self._kinds, weights = zip(*MIX.items())
        self._kind_cum = list(itertools.accumulate(weights))
        self._serial = itertools.count(1)

    # --- helpers ---------------------------------------------------------
    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _now(self) -> datetime:
        """Event time: the wall clock, or with a fixed epoch 10 ms per event after it."""
        if self.fixed_epoch:
            return self.epoch + timedelta(milliseconds=10 * self.tick)
        return datetime.now(timezone.utc)

    def _base(self) -> dict:
        return {"event_id": self._id(), "occurred_at": self._now()}

    def _popular_title(self) -> str:
        while True:
            i = bisect.bisect_left(self._cum, self.rng.random() * self._cum[-1])
            movie = self.titles[min(i, self.n_titles - 1)]
            if movie not in self.outcome.removed:
                return movie

    def _user(self) -> str:
        return self.rng.choice(self.users)

    # --- the stream ------------------------------------------------------
    def events(self, count: int) -> Iterator[Tuple[str, bytes, bytes, float, Optional[str]]]:
        """Yield ``(stream, key, value, timestamp, bad_reason)`` forever or ``count`` times."""
        from ..codec import encode, key_of

        produced = 0
        while count == 0 or produced < count:
            self.tick += 1
            if self.bad_share and self.rng.random() < self.bad_share and self.users:
                stream, key, value, reason = self._bad_event()
                self.outcome.bad[stream] += 1
                yield stream, key, value, self._now().timestamp(), reason
            else:
                event = self._next_event()
                self._account(event)
                yield (STREAM_OF_TYPE[event.TYPE], key_of(event), encode(event),
                       event.occurred_at.timestamp(), None)
            produced += 1

    def _next_event(self) -> r.Event:
        if len(self.live_titles) < self.n_titles and not self.outcome.removed:
            return self._title_upsert(self.titles[len(self.live_titles)])
        if not self.users:
            return self._signup()
        kind = self._kinds[bisect.bisect_left(self._kind_cum, self.rng.random() * self._kind_cum[-1])]
        return getattr(self, f"_{kind}")()

    def _account(self, e: r.Event) -> None:
        o = self.outcome
        o.events[e.TYPE] += 1
        if e.TYPE == "user.registered":
            o.users.add(e.user_id)
        elif e.TYPE == "subscription.started":
            o.subscriptions.add(e.subscription_id)
        elif e.TYPE.startswith("payment."):
            o.payments += 1
        elif e.TYPE == "preference.set":
            o.preferences.add((e.user_id, e.key))
        elif e.TYPE == "rating.submitted":
            o.ratings += 1
            o.rating_sum += e.score
        elif e.TYPE == "title.upserted":
            o.titles.add(e.movie_id)
            o.removed.discard(e.movie_id)
        elif e.TYPE == "title.removed":
            o.removed.add(e.movie_id)

    # --- event kinds -----------------------------------------------------
    def _signup(self) -> r.Event:
        if len(self.users) >= self.max_users:
            return self._rating()
        user_id = f"u{next(self._serial):07d}"
        self.users.append(user_id)
        return r.UserRegistered(
            **self._base(), user_id=user_id, email=self.fake.unique.email(),
            display_name=self.fake.name(), country=self.fake.country_code(),
            birth_year=self.rng.randint(1940, 2008))

    def _user_update(self) -> r.Event:
        return r.UserUpdated(**self._base(), user_id=self._user(),
                             display_name=self.fake.name(), country=self.fake.country_code())

    def _subscription(self) -> r.Event:
        user = self._user()
        plan = self.rng.choice(sorted(PLANS))
        sid = f"s{next(self._serial):07d}"
        self.active_subs[sid] = (user, plan)
        return r.SubscriptionStarted(**self._base(), subscription_id=sid, user_id=user,
                                     plan=plan, price_cents=PRICES[plan], currency="USD")

    def _pick_sub(self) -> Optional[Tuple[str, str, str]]:
        if not self.active_subs:
            return None
        sid = self.rng.choice(list(self.active_subs))
        user, plan = self.active_subs[sid]
        return sid, user, plan

    def _subscription_change(self) -> r.Event:
        picked = self._pick_sub()
        if picked is None:
            return self._subscription()
        sid, user, _ = picked
        plan = self.rng.choice(sorted(PLANS))
        self.active_subs[sid] = (user, plan)
        return r.SubscriptionChanged(**self._base(), subscription_id=sid, user_id=user,
                                     plan=plan, price_cents=PRICES[plan], currency="USD")

    def _cancel(self) -> r.Event:
        picked = self._pick_sub()
        if picked is None:
            return self._subscription()
        sid, user, _ = picked
        del self.active_subs[sid]
        return r.SubscriptionCancelled(**self._base(), subscription_id=sid, user_id=user,
                                       reason=self.rng.choice(["price", "content", "moved"]))

    def _payment(self) -> r.Event:
        picked = self._pick_sub()
        if picked is None:
            return self._subscription()
        sid, user, plan = picked
        fields = dict(self._base(), payment_id=f"p{next(self._serial):07d}", user_id=user,
                      subscription_id=sid, amount_cents=PRICES[plan], currency="USD",
                      card_token=self._card_token(),
                      card_last4=f"{self.rng.randrange(10000):04d}")
        if self.rng.random() < 0.08:
            return r.PaymentFailed(**fields, failure_reason=self.rng.choice(
                ["insufficient_funds", "expired_card", "do_not_honor"]))
        return r.PaymentProcessed(**fields)

    def _card_token(self) -> str:
        """A processor token: letters only, so it can never look like a card number."""
        return "tok_" + "".join(self.rng.choice(string.ascii_letters) for _ in range(16))

    def _preference(self) -> r.Event:
        key = self.rng.choice(PREF_KEYS)
        return r.PreferenceSet(**self._base(), user_id=self._user(), key=key,
                               value=self.rng.choice(PREF_VALUES[key]))

    def _rating(self) -> r.Event:
        movie = self._popular_title()
        # Popular titles rate a little better: a bias that leaderboards can show.
        rank = int(movie[1:])
        mean = 7.5 - 3.0 * rank / self.n_titles
        score = max(1, min(10, round(self.rng.gauss(mean, 1.8))))
        return r.RatingSubmitted(**self._base(), user_id=self._user(), movie_id=movie,
                                 score=score)

    def _session(self) -> r.Event:
        if self.open_sessions and self.rng.random() < 0.7:
            sid = self.rng.choice(list(self.open_sessions))
            user, movie, pos = self.open_sessions[sid]
            if self.rng.random() < 0.25:
                del self.open_sessions[sid]
                return r.SessionEnded(**self._base(), session_id=sid, user_id=user,
                                      movie_id=movie, watched_s=pos)
            pos += 30
            self.open_sessions[sid] = (user, movie, pos)
            return r.SessionHeartbeat(**self._base(), session_id=sid, user_id=user,
                                      movie_id=movie, position_s=pos)
        sid = f"w{next(self._serial):07d}"
        user, movie = self._user(), self._popular_title()
        self.open_sessions[sid] = (user, movie, 0)
        return r.SessionStarted(**self._base(), session_id=sid, user_id=user, movie_id=movie,
                                device=self.rng.choice(DEVICES))

    def _title_upsert(self, movie: str) -> r.Event:
        if movie not in self.live_titles:
            self.live_titles.append(movie)
        fake, rng = self.fake, self.rng
        return r.TitleUpserted(
            **self._base(), movie_id=movie,
            title=fake.catch_phrase(), year=rng.randint(1950, 2026),
            genres=sorted(rng.sample(GENRES, rng.randint(1, 3))),
            cast=[r.CastMember(name=fake.name(), role=rng.choice(["lead", "supporting", "cameo"]))
                  for _ in range(rng.randint(2, 6))],
            directors=[fake.name() for _ in range(rng.randint(1, 2))],
            similar=sorted(rng.sample(self.titles, min(4, self.n_titles))),
            artwork=[r.Artwork(kind=kind, url=f"https://img.example.com/{movie}/{kind}.jpg",
                               width=w, height=h, dominant_color=fake.hex_color())
                     for kind, w, h in (("poster", 1000, 1500), ("thumbnail", 320, 180))],
            synopsis=fake.paragraph(nb_sentences=3), runtime_min=rng.randint(70, 180))

    def _title_edit(self) -> r.Event:
        return self._title_upsert(self._popular_title())

    def _title_remove(self) -> r.Event:
        movie = self.titles[self.rng.randrange(self.n_titles // 2, self.n_titles)]
        if movie in self.outcome.removed or len(self.outcome.removed) > self.n_titles // 10:
            return self._title_edit()
        return r.TitleRemoved(**self._base(), movie_id=movie, reason="license_expired")

    # --- deliberately bad input ------------------------------------------
    def _bad_event(self) -> Tuple[str, bytes, bytes, str]:
        return malformed_rating(self.rng, self._rating())

    def summary(self) -> dict:
        return summarize(self.outcome)
