-- Throughput: make the worker's update of a group HOT (benches/RESULTS.md, "The group's activity
-- in its own row").
--
-- The worker updates every group it touches on every batch: count, last_seen and the latest
-- sample. last_seen and count were indexed on error_groups (the list's sort keys, and the last key
-- of each filter index), so no update was HOT: each one added an entry to all nine full indexes of
-- the table, and Postgres spent ~40 % of its CPU per event on that.
--
-- The sort keys now live in a narrow companion row, error_group_activity, written in the same
-- transaction with the same figures. Its update adds three small index entries. error_groups keeps
-- count and last_seen (every reader of one group reads them there), but no index of it contains
-- them any more, so its update is HOT while the group's level, environment, resolution and
-- first_seen stay the same, which is nearly always: no index entry at all.
--
-- Every writer of error_groups must write the activity row too (the worker, and the benches'
-- seeding). A worker from before this migration does not: roll the workers out with ingest, as
-- ingest applies this migration.
CREATE TABLE error_group_activity (
    group_id    uuid PRIMARY KEY REFERENCES error_groups (id) ON DELETE CASCADE,
    project_id  uuid NOT NULL,
    count       bigint NOT NULL,
    last_seen   timestamptz NOT NULL
);
INSERT INTO error_group_activity (group_id, project_id, count, last_seen)
SELECT id, project_id, count, last_seen FROM error_groups;
-- The list's sort orders; group_id is its tie-break (ORDER BY last_seen, id).
CREATE INDEX error_group_activity_last_seen_idx
    ON error_group_activity (project_id, last_seen DESC, group_id DESC);
CREATE INDEX error_group_activity_count_idx
    ON error_group_activity (project_id, count DESC, group_id DESC);
-- Like error_groups (0005): a few thousand rows updated many times a second.
ALTER TABLE error_group_activity SET (autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000, autovacuum_vacuum_cost_delay = 0);

-- The list's filters, without the sort key: a rare value is found through its index, a common one
-- by walking the activity's sort index and checking the group.
DROP INDEX error_groups_project_last_seen_idx;
DROP INDEX error_groups_project_level_last_seen_idx;
DROP INDEX error_groups_project_source_last_seen_idx;
DROP INDEX error_groups_project_environment_last_seen_idx;
DROP INDEX error_groups_project_resolved_last_seen_idx;
DROP INDEX error_groups_project_count_idx;
CREATE INDEX error_groups_project_level_idx ON error_groups (project_id, level);
CREATE INDEX error_groups_project_source_idx ON error_groups (project_id, source);
CREATE INDEX error_groups_project_environment_idx ON error_groups (project_id, environment);
CREATE INDEX error_groups_project_resolved_idx ON error_groups (project_id, resolved);

-- A HOT update needs room for the new version on the same page; a group row carries its latest
-- sample (~1-2 kB). Applies to pages written from now on.
ALTER TABLE error_groups SET (fillfactor = 50);
