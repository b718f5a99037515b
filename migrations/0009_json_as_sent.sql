-- An event's `context` and `extra`, and a group's latest `context`, are kept as the JSON text the
-- event carried (type json) instead of parsed into jsonb.
--
-- Nothing reads inside them in SQL: the read API returns them whole, and ingest has already parsed
-- and scrubbed them. Parsing into jsonb was the largest single item of Postgres's CPU at maximum
-- throughput (benches/RESULTS.md, twelfth session: `jsonb_recv` 5.8 % of the machine's CPU, 17 % of
-- Postgres's), on every event of every batch. json only checks the syntax. A query that needs
-- jsonb's operators or a GIN index can still cast (`context::jsonb`).
--
-- Rewrites both tables once (an ACCESS EXCLUSIVE lock for as long as that takes): the worker waits,
-- its events stay queued in RabbitMQ, and nothing is lost.
ALTER TABLE events
    ALTER COLUMN context TYPE json USING context::json,
    ALTER COLUMN extra TYPE json USING extra::json;
ALTER TABLE error_groups
    ALTER COLUMN context TYPE json USING context::json;
