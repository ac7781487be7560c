"""``/api/leaderboards/``: a Redis leaderboard with title names."""
from __future__ import annotations

import time
from typing import Any, Dict

from faust.web import Request, Response

from tables.ratings import TUMBLING

from ..records import GENRES
from ..stores import stores
from .api import ApiView, from_store, utc
from .params import BadRequest, choice, int_in
from .titles import WINDOWS, title_names, window_board_key

#: Leaderboards by name (``window`` and genre boards are built per request).
BOARDS = {"rated": stores.redis.keys.rated_all, "best": stores.redis.keys.best_rated,
          "watched": stores.redis.keys.most_watched, "window": None}


class LeaderboardView(ApiView):
    """``board`` (default ``rated``): ``rated`` = most rated all time (or in
    ``genre``), ``best`` = best average with at least MIN_VOTES votes,
    ``watched`` = most sessions started, ``window`` = most rated in the
    current ``window`` (default the tumbling one)."""

    params = frozenset({"board", "window", "genre", "n"})

    async def handle(self, request: Request) -> Response:
        query = request.query
        board = choice(query, "board", BOARDS, default="rated")
        window = choice(query, "window", WINDOWS)
        genre = choice(query, "genre", GENRES)
        n = int_in(query, "n", 1, 100, default=10)
        if window and board != "window":
            raise BadRequest("window applies to board=window only")
        if genre and board != "rated":
            raise BadRequest("genre applies to board=rated only")
        body: Dict[str, Any] = {"board": board, "n": n}
        if board == "window":
            window = window or TUMBLING
            key, start = window_board_key(window, time.time())
            body.update(window=window, window_start=utc(start))
        elif genre:
            key = stores.redis.keys.genre(genre)
            body["genre"] = genre
        else:
            key = str(BOARDS[board or "rated"])  # not "window": handled above
        rows = await from_store("redis", stores.redis.top(key, n))
        names = await title_names([movie_id for movie_id, _ in rows])
        body["entries"] = [
            {"rank": i, "movie_id": movie_id, "title": names.get(movie_id),
             "score": int(score) if board != "best" else score}
            for i, (movie_id, score) in enumerate(rows, 1)]
        return self.json(body)
