-- Ratings are durable here: one row per rating event (the source of truth for
-- recomputing any aggregate), plus running per-title totals kept in the same
-- transaction, so the totals are exact however often a batch is replayed.

CREATE TABLE ratings (
    event_id    uuid PRIMARY KEY,
    user_id     text NOT NULL REFERENCES users (user_id),
    movie_id    text NOT NULL,
    score       smallint NOT NULL CHECK (score BETWEEN 1 AND 10),
    occurred_at timestamptz NOT NULL
);
CREATE INDEX ratings_movie_idx ON ratings (movie_id);
CREATE INDEX ratings_user_idx ON ratings (user_id);

CREATE TABLE title_rating_totals (
    movie_id   text PRIMARY KEY,
    votes      bigint NOT NULL CHECK (votes >= 0),
    score_sum  bigint NOT NULL CHECK (score_sum >= 0)
);
