-- Throughput: keep the worker's per-batch upserts cheap (benches/RESULTS.md, "GIN on the hot row").
--
-- Every batch updates each group it touches (count, last_seen, latest sample). Those updates
-- cannot be HOT (count and last_seen are indexed), so each one adds an entry to every index of
-- error_groups. For the trigram GIN index behind `q` that meant ~100 trigram entries per update
-- and periodic pending-list flushes inside the worker's transaction: the upsert took 3-6x as long
-- with it (92-241 ms vs 28-43 ms per 1,000 groups). The searchable text now lives in its own table,
-- written once when a group is created, so the hot row carries only B-tree indexes.

-- The text `q` searches: the message of the group's first event (its title), written when the group
-- is created and never updated.
CREATE TABLE error_group_search (
    group_id    uuid PRIMARY KEY REFERENCES error_groups (id) ON DELETE CASCADE,
    project_id  uuid NOT NULL,
    message     text NOT NULL
);
INSERT INTO error_group_search (group_id, project_id, message)
SELECT id, project_id, message FROM error_groups;
CREATE INDEX error_group_search_message_trgm_idx ON error_group_search USING gin (message gin_trgm_ops);
DROP INDEX error_groups_message_trgm_idx;

-- The per-minute and per-hour counters are updated in place by every batch; count is not indexed,
-- so with free room on the page the update is HOT (no index entries, pruned without VACUUM).
ALTER TABLE error_counts_minute SET (fillfactor = 70);
ALTER TABLE error_counts_hour SET (fillfactor = 70);

-- A few thousand hot rows updated many times a second leave dead versions that every upsert must
-- step over until VACUUM removes them: vacuum these tables after a fixed number of dead rows
-- rather than a fraction of the (small) table, and without throttling.
ALTER TABLE error_groups SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
                              autovacuum_vacuum_cost_delay = 0);
ALTER TABLE error_counts_minute SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE error_counts_hour SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                                   autovacuum_vacuum_cost_delay = 0);
