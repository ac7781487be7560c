-- "Newest wins" for state that a later event replaces (docs/events.md): each
-- replaceable part of a row remembers the rank of the event that set it,
-- `version` = occurred_at in UTC (microseconds) || '|' || event_id, text that
-- sorts bytewise (compare it with COLLATE "C").  An event changes a part only
-- if its rank is greater, so the result does not depend on batching or order.
-- Rows stored before this migration have NULL ranks: any event outranks them.

ALTER TABLE users
    ADD COLUMN display_name_v text,
    ADD COLUMN country_v      text,
    ADD COLUMN email_v        text,
    ADD COLUMN registered_v   text;

ALTER TABLE subscriptions
    ADD COLUMN plan_v    text,
    ADD COLUMN started_v text,
    ADD COLUMN cancel_v  text;

ALTER TABLE preferences ADD COLUMN v text;
