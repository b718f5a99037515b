-- 100,000 groups and 2,000,000 events over the last 30 days in the default project, with minute
-- rollups derived from the events (as the worker would write them). 20 groups are in environment
-- `canary` and 20 come from source `cron`: the rare filters, which must not read the whole project.
\timing on
SET synchronous_commit = off;
INSERT INTO error_groups (id, project_id, fingerprint, grouping_version, normalized_message, level, message,
    source, environment, count, first_seen, last_seen, resolved, resolved_at)
SELECT md5('g' || g)::uuid, '00000000-0000-0000-0000-000000000001', md5('g' || g), 1,
       'failure <int> in module ' || (g % 997),
       (ARRAY['error','warning','info','debug'])[1 + g % 4],
       'failure ' || g || ' in module ' || (g % 997),
       CASE WHEN g % 5000 = 1 THEN 'cron' ELSE (ARRAY['backend','frontend','api','worker','mobile'])[1 + g % 5] END,
       CASE WHEN g % 5000 = 0 THEN 'canary' ELSE (ARRAY['production','staging','development'])[1 + g % 3] END,
       20,
       now() - interval '30 days' + (g % 1000) * interval '1 minute',
       now() - (g * interval '25 seconds'),
       g % 3 = 0,
       CASE WHEN g % 3 = 0 THEN now() - (g * interval '20 seconds') END
FROM generate_series(1, 100000) AS g;
INSERT INTO events (id, project_id, group_id, received_at, level, message, source, environment, context)
SELECT md5('e' || e)::uuid, '00000000-0000-0000-0000-000000000001', md5('g' || (1 + e % 100000))::uuid,
       now() - (e * interval '1.296 seconds'),
       (ARRAY['error','warning','info','debug'])[1 + (1 + e % 100000) % 4],
       'failure ' || (1 + e % 100000), 
       (ARRAY['backend','frontend','api','worker','mobile'])[1 + (1 + e % 100000) % 5],
       (ARRAY['production','staging','development'])[1 + (1 + e % 100000) % 3],
       jsonb_build_object('i', e)
FROM generate_series(1, 2000000) AS e;
INSERT INTO error_counts_minute (project_id, minute, group_id, level, environment, count)
SELECT project_id, date_trunc('minute', received_at), group_id, level, environment, count(*)
FROM events GROUP BY 1, 2, 3, 4, 5;
INSERT INTO error_group_search (group_id, project_id, message)
SELECT id, project_id, message FROM error_groups;
INSERT INTO error_group_activity (group_id, project_id, count, last_seen)
SELECT id, project_id, count, last_seen FROM error_groups;
INSERT INTO error_resolutions (project_id, group_id, opened_at, resolved_at)
SELECT project_id, id, first_seen, resolved_at FROM error_groups WHERE resolved;
ANALYZE;
SELECT (SELECT count(*) FROM error_groups) AS groups, (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM error_counts_minute) AS rollup_rows;
