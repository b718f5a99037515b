-- new_error and regression rules in commit order (RELIABILITY.md, "A group created or regressed
-- while a rule is evaluated").
--
-- These rules used to take the groups whose created_at / regressed_at fell in (last evaluation,
-- now]. Both are now() of the worker's transaction, i.e. its start, and a worker transaction takes
-- ~0.3 s under load: a group whose transaction began before an evaluation and committed after it
-- was invisible to that evaluation and too old for the next one, and its alert was lost.
--
-- They now follow transaction ids. Each evaluation takes the xmin of its snapshot as its upper
-- bound: every transaction with a smaller id has ended, so no row stamped with such an id can
-- appear later. A rule keeps the bound it evaluated up to (`alert_rules.last_xmin`), and the next
-- evaluation takes the rows stamped in [last_xmin, its own xmin): each committed row falls in
-- exactly one evaluation, at most one tick after its commit. created_at and regressed_at stay, for
-- display.

-- The id of the transaction that created the group. It is kept on the group's companion row, which
-- the worker writes in the same statement as the group and never updates, rather than on
-- error_groups: the worker updates every group it touches on every batch, and those updates are not
-- HOT (count and last_seen are indexed), so every index on error_groups costs one entry per group per
-- batch (benches/RESULTS.md, "Statement costs"). Here the index costs one entry per new group. The
-- default also stamps rows written by code that does not know the column (an older worker, the
-- benches' seeding); rows already here get this migration's id, which every later xmin exceeds.
ALTER TABLE error_group_search ADD COLUMN created_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX error_group_search_project_created_xid_idx ON error_group_search (project_id, created_xid);

-- The id of the transaction that last marked the group regressed; set by the worker's upsert in the
-- same assignment as regressed_at. NULL for groups that never regressed (and for regressions from
-- before this migration, which the rules' first evaluation handles by time). A worker from before
-- this migration does not set it, and a regression rule misses what such a worker reopens: roll
-- the workers out before (or with) the alerter. Partial, so only
-- groups that have regressed at some time are in the index: the batches' updates of every other
-- group add nothing to it (an update of a group in it still adds an entry, as for any index here).
ALTER TABLE error_groups ADD COLUMN regressed_xid xid8;
CREATE INDEX error_groups_project_regressed_xid_idx ON error_groups (project_id, regressed_xid)
    WHERE regressed_xid IS NOT NULL;

-- The bound of the rule's last evaluation (an xmin, see above). NULL until the rule is first
-- evaluated: that evaluation takes what appeared since last_evaluated_at (or since the rule was
-- created) by time, below its own xmin, and every later one goes by transaction id.
ALTER TABLE alert_rules ADD COLUMN last_xmin xid8;
