"""A small simulated platform that emits believable events (S1).

The world runs on its own clock.  Every event spends ``10 ms / intensity``
of *event time* (``profiles.py``; steady: exactly 10 ms), and the world's
clock runs ``speed`` times faster than event time (default 60: one world
minute per second of event time), so that viewing sessions, billing periods
and fading releases happen within a run.  Things that are due at a world
time (the next heartbeat of an open session, its end, the next charge of a
subscription, the next release) are emitted when the clock reaches them;
otherwise a spontaneous event is drawn from ``MIX``.

- Sessions heartbeat every 30 world seconds and last a log-normal while
  (median 14 minutes, at most the runtime); 5 % are abandoned: they stop
  beating without an end, and time out in the stores.
- A subscription is charged when it starts and then every billing period
  while it is active; a failed charge is retried daily, three failures
  cancel it.  A cancelled subscription is never charged again.  A user has
  at most one active subscription.
- Titles keep their identity (``catalog.py``); new ones are released over
  time; popularity is long-tailed and drifts.

Everything random comes from one seeded generator (and, per title, a
generator seeded with the seed and the title's id): the same seed gives the
same events, ids included.  Timestamps are the wall clock at production, or,
with ``--epoch``, that epoch plus the event time, which makes the stream
identical byte for byte.
"""
from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Dict, Iterator, List, Optional, Tuple

from faker import Faker

from .. import records as r
from ..codec import encode, key_of
from ..topics import STREAM_OF_TYPE
from .billing import BILLING_PERIOD_S, PRICES, Billing  # noqa: F401 (PRICES: API)
from .catalog import DAY, YEAR, Catalog
from .outcome import Outcome, bad_event
from .profiles import SPIKE_AT_S, intensity

DEVICES = ["tv", "web", "ios", "android", "console"]
PREF_KEYS = ["language", "subtitles", "autoplay", "maturity", "quality"]
PREF_VALUES = {"language": ["en", "pt", "es", "fr", "de"], "subtitles": ["on", "off"],
               "autoplay": ["on", "off"], "maturity": ["kids", "teen", "adult"],
               "quality": ["auto", "hd", "4k"]}
STEP_US = 10_000               # event time per event at intensity 1
HEARTBEAT_S = 30.0             # world seconds between a session's heartbeats
SESSION_MEDIAN_S = 14 * 60.0
ABANDON_SHARE = 0.05           # sessions that stop without an end (they time out)

#: The spontaneous mix; heartbeats, session ends, payments and releases are
#: scheduled on top (sessions end up about 45 % of the stream, see the README).
MIX = {
    "session": 1.1, "rating": 30, "preference": 5, "signup": 5, "user_update": 1,
    "subscription": 4, "subscription_change": 1, "cancel": 1,
    "title_edit": 0.8, "title_remove": 0.2,
}


@dataclass
class Session:
    user: str
    movie: str
    started: float
    length: float
    abandons: bool


class World(Billing):
    def __init__(self, seed: int, users: int, titles: int, bad_share: float = 0.0,
                 epoch: Optional[datetime] = None, profile: str = "steady",
                 speed: float = 60.0, billing_period_s: float = BILLING_PERIOD_S) -> None:
        self.rng = random.Random(seed)
        self.fake = Faker()
        self.fake.seed_instance(seed)
        self.max_users = users
        self.n_titles = titles
        self.bad_share = bad_share
        self.fixed_epoch = epoch is not None
        self.epoch = epoch or datetime.now(timezone.utc)
        self.profile = profile
        self.speed = speed
        self.billing_period_s = billing_period_s
        self.start_hour = self.epoch.hour + self.epoch.minute / 60
        intensity(profile, 0.0)  # refuse an unknown profile now
        self.tick = 0
        self.event_us = 0          # event time since the start
        self.clock = 0.0           # world seconds since the start
        self.intensity = 1.0
        self.outcome = Outcome()
        self.users: List[str] = []
        self.active_subs: Dict[str, list] = {}    # sid -> [user, plan, failures]
        self.subscription_of: Dict[str, str] = {}  # user -> active sid
        self.open_sessions: Dict[str, Session] = {}
        self.queue: List[tuple] = []               # (due, seq, kind, ref)
        self._seq = itertools.count()
        self._kinds, weights = zip(*MIX.items())
        self._kind_cum = list(itertools.accumulate(weights))
        self._serial = itertools.count(1)
        self.catalog = Catalog(seed, self.epoch.year)
        self.titles: List[str] = [f"m{i:05d}" for i in range(titles)]
        self.live_titles: List[str] = []
        for movie in self.titles:
            self.catalog.create(movie, None, self.titles)
        self._schedule(self._next_release_gap(), "release", None)
        if profile == "launch-spike":
            self._schedule(SPIKE_AT_S, "release", "blockbuster")

    # --- helpers ---------------------------------------------------------
    def _next_release_gap(self) -> float:
        return self.rng.expovariate(max(1.0, self.n_titles / 100) / DAY)

    def _schedule(self, due: float, kind: str, ref: object) -> None:
        heapq.heappush(self.queue, (due, next(self._seq), kind, ref))

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _now(self) -> datetime:
        """Event time: the wall clock, or with a fixed epoch the epoch plus the event time."""
        if self.fixed_epoch:
            return self.epoch + timedelta(microseconds=self.event_us)
        return datetime.now(timezone.utc)

    def _base(self) -> dict:
        return {"event_id": self._id(), "occurred_at": self._now()}

    def _popular_title(self) -> str:
        return (self.catalog.popular(self.rng, self.clock, self.live_titles)
                or self.rng.choice(self.live_titles))

    def _user(self) -> str:
        return self.rng.choice(self.users)

    @property
    def elapsed_s(self) -> float:
        """Event time since the start, in seconds (the producer paces by it)."""
        return self.event_us / 1e6

    # --- the stream ------------------------------------------------------
    def events(self, count: int) -> Iterator[Tuple[str, bytes, bytes, float, Optional[str]]]:
        """Yield ``(stream, key, value, timestamp, bad_reason)`` forever or ``count`` times."""
        produced = 0
        while count == 0 or produced < count:
            self.tick += 1
            self.intensity = intensity(self.profile, self.clock, self.start_hour)
            self.event_us += round(STEP_US / self.intensity)
            self.clock = self.event_us * self.speed / 1e6
            if self.bad_share and self.rng.random() < self.bad_share and self.users \
                    and len(self.live_titles) >= self.n_titles:
                stream, key, value, reason = bad_event(self.rng, self._rating)
                self.outcome.bad[stream] += 1
                yield stream, key, value, self._now().timestamp(), reason
            else:
                event = self._next_event()
                self.outcome.account(event)
                yield (STREAM_OF_TYPE[event.TYPE], key_of(event), encode(event),
                       event.occurred_at.timestamp(), None)
            produced += 1

    def _next_event(self) -> r.Event:
        if len(self.live_titles) < self.n_titles:
            movie = self.titles[len(self.live_titles)]
            self.live_titles.append(movie)
            return self.catalog.titles[movie].event(self._base())
        if not self.users:
            return self._signup()
        due = self._due()
        if due is not None:
            return due
        kind = self._kinds[bisect.bisect_left(self._kind_cum, self.rng.random() * self._kind_cum[-1])]
        event: r.Event = getattr(self, f"_{kind}")()
        return event

    def _due(self) -> Optional[r.Event]:
        """The first scheduled event that is due and still meant to happen."""
        while self.queue and self.queue[0][0] <= self.clock:
            due, _, kind, ref = heapq.heappop(self.queue)
            event: Optional[r.Event] = getattr(self, f"_due_{kind}")(due, ref)
            if event is not None:
                return event
        return None

    def summary(self) -> dict:
        return self.outcome.summary()

    # --- accounts ----------------------------------------------------------
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

    def _preference(self) -> r.Event:
        key = self.rng.choice(PREF_KEYS)
        return r.PreferenceSet(**self._base(), user_id=self._user(), key=key,
                               value=self.rng.choice(PREF_VALUES[key]))

    # --- viewing -----------------------------------------------------------------
    def _rating(self) -> r.Event:
        movie = self._popular_title()
        quality = self.catalog.titles[movie].quality
        score = max(1, min(10, round(self.rng.gauss(quality, 1.6))))
        return r.RatingSubmitted(**self._base(), user_id=self._user(), movie_id=movie,
                                 score=score)

    def _session(self) -> r.Event:
        sid = f"w{next(self._serial):07d}"
        user, movie = self._user(), self._popular_title()
        runtime_s = self.catalog.titles[movie].runtime_min * 60.0
        length = min(runtime_s, max(10.0, self.rng.lognormvariate(math.log(SESSION_MEDIAN_S),
                                                                  0.9)))
        self.open_sessions[sid] = Session(user, movie, self.clock, length,
                                          self.rng.random() < ABANDON_SHARE)
        if length > HEARTBEAT_S:
            self._schedule(self.clock + HEARTBEAT_S, "beat", sid)
        else:
            self._schedule(self.clock + length, "end", sid)
        return r.SessionStarted(**self._base(), session_id=sid, user_id=user, movie_id=movie,
                                device=self.rng.choice(DEVICES))

    def _due_beat(self, due: float, sid: str) -> r.Event:
        s = self.open_sessions[sid]
        if due + HEARTBEAT_S < s.started + s.length:
            self._schedule(due + HEARTBEAT_S, "beat", sid)
        else:
            self._schedule(s.started + s.length, "end", sid)
        return r.SessionHeartbeat(**self._base(), session_id=sid, user_id=s.user,
                                  movie_id=s.movie, position_s=round(due - s.started))

    def _due_end(self, due: float, sid: str) -> Optional[r.Event]:
        s = self.open_sessions.pop(sid)
        if s.abandons:
            return None  # the player went away: no end, the stores time it out
        return r.SessionEnded(**self._base(), session_id=sid, user_id=s.user,
                              movie_id=s.movie, watched_s=int(s.length))

    # --- catalog -----------------------------------------------------------------
    def _title_edit(self) -> r.Event:
        return self.catalog.edit(self._popular_title(), self.rng).event(self._base())

    def _title_remove(self) -> r.Event:
        """A licence runs out: an old title leaves the catalog (at most 10 %)."""
        movie = self.rng.choice(self.live_titles)
        title = self.catalog.titles[movie]
        if title.removed or self.clock - title.released < YEAR \
                or len(self.outcome.removed) >= len(self.titles) // 10:
            return self._title_edit()
        title.removed = True
        self.catalog.reweigh()
        return r.TitleRemoved(**self._base(), movie_id=movie, reason="license_expired")

    def _due_release(self, due: float, ref: Optional[str]) -> r.Event:
        movie = f"m{len(self.titles):05d}"
        if ref is None:
            self._schedule(due + self._next_release_gap(), "release", None)
        title = self.catalog.create(movie, due, self.live_titles)
        if ref == "blockbuster":  # the launch: the most popular title, at once
            title.hyped = True
            title.appeal = 3 * max(t.appeal for t in self.catalog.titles.values())
        self.titles.append(movie)
        self.live_titles.append(movie)
        return title.event(self._base())
