-- Users, subscriptions, payments, preferences: the data that must be consistent.
-- Rows created only because another event referred to them ("inferred") carry
-- inferred = true until their own event arrives; nothing is dropped for being early.

CREATE TABLE users (
    user_id        text PRIMARY KEY CHECK (length(user_id) BETWEEN 1 AND 64),
    email          text CHECK (email IS NULL OR position('@' IN email) > 1),
    display_name   text CHECK (length(display_name) <= 200),
    country        char(2),
    birth_year     integer CHECK (birth_year BETWEEN 1900 AND 2025),
    inferred       boolean NOT NULL DEFAULT false,
    registered_at  timestamptz,
    updated_at     timestamptz NOT NULL,
    CHECK (inferred OR (email IS NOT NULL AND registered_at IS NOT NULL))
);
CREATE INDEX users_country_idx ON users (country);

CREATE TABLE subscriptions (
    subscription_id text PRIMARY KEY,
    user_id         text NOT NULL REFERENCES users (user_id),
    plan            text NOT NULL CHECK (plan IN ('basic', 'standard', 'premium', 'unknown')),
    status          text NOT NULL CHECK (status IN ('active', 'cancelled', 'inferred')),
    price_cents     integer NOT NULL CHECK (price_cents >= 0),
    currency        char(3) NOT NULL,
    started_at      timestamptz,
    cancelled_at    timestamptz,
    cancel_reason   text,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX subscriptions_user_idx ON subscriptions (user_id);

-- No card number is ever stored: a processor token and the last four digits.
CREATE TABLE payments (
    payment_id      text PRIMARY KEY,
    event_id        uuid NOT NULL UNIQUE,
    user_id         text NOT NULL REFERENCES users (user_id),
    subscription_id text NOT NULL REFERENCES subscriptions (subscription_id),
    status          text NOT NULL CHECK (status IN ('processed', 'failed')),
    amount_cents    integer NOT NULL CHECK (amount_cents > 0),
    currency        char(3) NOT NULL,
    card_token      text NOT NULL CHECK (card_token LIKE 'tok\_%'),
    card_last4      char(4) NOT NULL CHECK (card_last4 ~ '^[0-9]{4}$'),
    failure_reason  text,
    occurred_at     timestamptz NOT NULL
);
CREATE INDEX payments_user_idx ON payments (user_id, occurred_at DESC);

CREATE TABLE preferences (
    user_id     text NOT NULL REFERENCES users (user_id),
    key         text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_.]{0,63}$'),
    value       text NOT NULL CHECK (length(value) <= 256),
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, key)
);

-- Every event applied to PostgreSQL, once: the idempotency ledger ("inbox").
-- A replayed event finds its id here and changes nothing.
CREATE TABLE applied_events (
    event_id     uuid PRIMARY KEY,
    event_type   text NOT NULL,
    subject_id   text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX applied_events_type_idx ON applied_events (event_type);
