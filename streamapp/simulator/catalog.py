"""The simulated catalog: titles with a stable identity, edits the way
editors make them, and a long-tailed popularity that drifts.

A title's identity (name, year) and its first metadata come from its own
generator, seeded with the world's seed and its ``movie_id``, so the same
seed always names ``m00042`` the same way, whoever produces it.  Edits change
a field or two (a synopsis fix, new artwork, a cast addition, now and then a
genre) and never the name or the year.

Popularity is ``appeal x rise x fade(age)``: appeal is log-normal (a few
titles draw most viewers, the rest a long tail), a new release rises over
its first day and fades over weeks to a back-catalog floor.  All times are
world seconds (see ``world.py``).
"""
from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from faker import Faker

from .. import records as r

DAY = 86_400.0
YEAR = 365 * DAY
GENRES = ["action", "adventure", "animation", "comedy", "crime", "documentary", "drama",
          "family", "fantasy", "horror", "mystery", "romance", "sci-fi", "thriller", "western"]
ROLES = ["lead", "supporting", "cameo"]
RISE_S = DAY            # a release reaches full popularity over its first day
FADE_S = 10 * DAY       # then fades with this time constant ...
FLOOR = 0.05            # ... to this share of its appeal (the back catalog)
RECENT_SHARE = 0.15     # of the initial catalog, released within the last 30 days
MAX_CAST = 12
MAX_GENRES = 4
#: What an edit touches, and how often (one or two of these per edit).
EDITS = {"synopsis": 4, "artwork": 3, "cast": 2, "genre": 1, "similar": 1, "runtime": 0.5}


@dataclass
class Title:
    movie_id: str
    title: str
    year: int
    genres: List[str]
    cast: List[Tuple[str, str]]
    directors: List[str]
    similar: List[str]
    synopsis: List[str]
    runtime_min: int
    colors: Tuple[str, str]
    released: float          # world seconds; negative: before the run started
    appeal: float
    quality: float           # the mean score its ratings scatter around
    artwork_version: int = 1
    removed: bool = False
    hyped: bool = False      # a blockbuster: at full popularity from its release

    def event(self, base: dict) -> r.TitleUpserted:
        v = self.artwork_version
        artwork = [r.Artwork(kind=kind, url=f"https://img.example.com/{self.movie_id}/{kind}"
                                            f"-v{v}.jpg",
                             width=w, height=h, dominant_color=color)
                   for (kind, w, h), color in zip((("poster", 1000, 1500),
                                                   ("thumbnail", 320, 180)), self.colors)]
        return r.TitleUpserted(
            **base, movie_id=self.movie_id, title=self.title, year=self.year,
            genres=sorted(self.genres),
            cast=[r.CastMember(name=n, role=role) for n, role in self.cast],
            directors=list(self.directors), similar=sorted(self.similar), artwork=artwork,
            synopsis=" ".join(self.synopsis), runtime_min=self.runtime_min)


@dataclass
class Catalog:
    seed: int
    start_year: int
    titles: Dict[str, Title] = field(default_factory=dict)
    order: List[str] = field(default_factory=list)
    _cum: List[float] = field(default_factory=list)
    _cum_ids: List[str] = field(default_factory=list)
    _weighed_at: Optional[float] = None

    def __post_init__(self) -> None:
        self.fake = Faker()

    # --- identity ------------------------------------------------------------
    def create(self, movie_id: str, released: Optional[float], pool: List[str]) -> Title:
        """A title from its own generator; ``pool`` is where similar titles come
        from.  ``released`` None: a title of the catalog the run starts with."""
        rng = random.Random(f"{self.seed}:{movie_id}")
        fake = self.fake
        fake.seed_instance(f"{self.seed}:{movie_id}")
        if released is None:
            released = (-rng.uniform(0, 30 * DAY) if rng.random() < RECENT_SHARE
                        else -rng.uniform(YEAR, 40 * YEAR))
        if released < -30 * DAY:
            year = self.start_year - 1 - min(70, int(-released / YEAR))
        else:
            year = self.start_year + int(max(0.0, released) / YEAR)
        appeal = math.exp(rng.gauss(0.0, 1.2))
        genres = rng.sample(GENRES, rng.randint(1, 3))
        title = Title(
            movie_id=movie_id, title=fake.catch_phrase().title(), year=year, genres=genres,
            cast=[(fake.name(), rng.choice(ROLES)) for _ in range(rng.randint(2, 6))],
            directors=[fake.name() for _ in range(rng.randint(1, 2))], similar=[],
            synopsis=[fake.sentence(nb_words=12) for _ in range(3)],
            runtime_min=rng.randint(70, 180), colors=(fake.hex_color(), fake.hex_color()),
            released=released, appeal=appeal,
            quality=min(9.3, max(3.0, 6.4 + 0.4 * math.log(appeal) + rng.gauss(0, 0.8))))
        title.similar = self._similar_for(title, pool, rng)
        self.titles[movie_id] = title
        self.order.append(movie_id)
        self._weighed_at = None
        return title

    def _similar_for(self, title: Title, pool: List[str], rng: random.Random) -> List[str]:
        """Up to four other titles, those sharing a genre first; never the title itself."""
        others = [m for m in pool if m != title.movie_id
                  and not (m in self.titles and self.titles[m].removed)]
        close = [m for m in others if m in self.titles
                 and set(self.titles[m].genres) & set(title.genres)]
        picked = rng.sample(close, min(4, len(close)))
        rest = [m for m in others if m not in picked]
        picked += rng.sample(rest, min(4 - len(picked), len(rest)))
        return picked

    # --- edits -----------------------------------------------------------------
    def edit(self, movie_id: str, rng: random.Random) -> Title:
        """One editor's change: one or two fields, never the name or the year."""
        t = self.titles[movie_id]
        kinds, weights = zip(*EDITS.items())
        for kind in dict.fromkeys(rng.choices(kinds, weights, k=rng.choice((1, 1, 2)))):
            if kind == "synopsis":
                t.synopsis[rng.randrange(len(t.synopsis))] = self.fake.sentence(nb_words=12)
            elif kind == "artwork":
                t.artwork_version += 1
                t.colors = (self.fake.hex_color(), t.colors[1] if rng.random() < 0.5
                            else self.fake.hex_color())
            elif kind == "cast" and len(t.cast) < MAX_CAST:
                t.cast.append((self.fake.name(), rng.choice(ROLES[1:])))
            elif kind == "genre":
                if len(t.genres) > 1 and (len(t.genres) >= MAX_GENRES or rng.random() < 0.4):
                    t.genres.remove(rng.choice(t.genres))
                else:
                    t.genres.append(rng.choice([g for g in GENRES if g not in t.genres]))
            elif kind == "similar":
                t.similar = self._similar_for(t, [m for m in self.order
                                                  if not self.titles[m].removed], rng)
            elif kind == "runtime":
                t.runtime_min = max(1, t.runtime_min + rng.choice((-3, -2, -1, 1, 2, 3)))
        return t

    # --- popularity ------------------------------------------------------------
    def weight(self, t: Title, now: float) -> float:
        age = now - t.released
        if t.removed or age < 0:
            return 0.0
        rise = 1.0 if t.hyped else min(1.0, (age + 3600.0) / RISE_S)
        return t.appeal * rise * (FLOOR + (1 - FLOOR) * math.exp(-age / FADE_S))

    def popular(self, rng: random.Random, now: float, live: List[str]) -> Optional[str]:
        """A title drawn by its popularity now (weights refreshed every world hour)."""
        if self._weighed_at is None or now - self._weighed_at >= 3600.0:
            ids = [m for m in live if not self.titles[m].removed]
            self._cum_ids = ids
            self._cum = list(itertools.accumulate(self.weight(self.titles[m], now)
                                                  for m in ids))
            self._weighed_at = now
        if not self._cum or self._cum[-1] <= 0:
            return None
        i = bisect.bisect_right(self._cum, rng.random() * self._cum[-1])
        return self._cum_ids[min(i, len(self._cum_ids) - 1)]

    def reweigh(self) -> None:
        """Recompute the weights at the next draw (a title came or went)."""
        self._weighed_at = None
