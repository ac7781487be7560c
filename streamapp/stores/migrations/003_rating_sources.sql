-- Where each rating was first read from (Kafka partition and offset).  The
-- rating tables count a rating only at this source, so a copy of it elsewhere
-- in the topic (a producer retry, a replayed stream) is not counted twice.
-- Rows stored before this migration have none; they count where they are.

ALTER TABLE ratings ADD COLUMN src_partition integer, ADD COLUMN src_offset bigint;
