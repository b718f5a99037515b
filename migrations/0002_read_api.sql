-- The dashboard read API: indexes behind its filters and sorts, the history of resolutions (so
-- statistics and trends can use resolution times), and the recorded health checks behind uptime
-- and availability.

-- Each filter of GET /api/errors narrows one project and then sorts; these keep every single
-- filter an index range scan in the default order (last_seen DESC) and the other sort keys cheap.
CREATE INDEX error_groups_project_level_last_seen_idx
    ON error_groups (project_id, level, last_seen DESC);
CREATE INDEX error_groups_project_source_last_seen_idx
    ON error_groups (project_id, source, last_seen DESC);
CREATE INDEX error_groups_project_environment_last_seen_idx
    ON error_groups (project_id, environment, last_seen DESC);
CREATE INDEX error_groups_project_resolved_last_seen_idx
    ON error_groups (project_id, resolved, last_seen DESC);
-- The list's ORDER BY ends with id (a stable order for paging), so the sort indexes do too.
CREATE INDEX error_groups_project_first_seen_idx ON error_groups (project_id, first_seen DESC, id DESC);
CREATE INDEX error_groups_project_count_idx ON error_groups (project_id, count DESC, id DESC);
-- `q` (text in the message, ILIKE '%...%') uses trigrams instead of reading every group.
-- pg_trgm is a trusted extension: the database owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX error_groups_message_trgm_idx ON error_groups USING gin (message gin_trgm_ops);
CREATE INDEX error_groups_project_resolved_at_idx
    ON error_groups (project_id, resolved_at) WHERE resolved;

-- One row per resolution of a group: opened_at is when the group was (re)opened (its first_seen,
-- or the regression that reopened it), resolved_at when someone resolved it. Stats average
-- resolved_at - opened_at; trends count resolutions per bucket. Deleting a group deletes these.
CREATE TABLE error_resolutions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id   uuid NOT NULL,
    group_id     uuid NOT NULL,
    opened_at    timestamptz NOT NULL,
    resolved_at  timestamptz NOT NULL,
    CONSTRAINT error_resolutions_group_fk FOREIGN KEY (group_id)
        REFERENCES error_groups (id) ON DELETE CASCADE
);
CREATE INDEX error_resolutions_project_resolved_idx ON error_resolutions (project_id, resolved_at);
CREATE INDEX error_resolutions_group_idx ON error_resolutions (group_id);

-- Health checks recorded by every ingest instance every HEALTH_CHECK_INTERVAL_SECS: one row per
-- (check, component). "api" is the overall verdict (ingest can take events and serve reads).
CREATE TABLE health_checks (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    checked_at        timestamptz NOT NULL DEFAULT now(),
    instance          text NOT NULL,
    component         text NOT NULL,
    healthy           boolean NOT NULL,
    response_time_ms  double precision NOT NULL,
    error             text,
    CONSTRAINT health_checks_component_known
        CHECK (component IN ('api', 'postgres', 'redis', 'rabbitmq', 'worker', 'alerter'))
);
CREATE INDEX health_checks_component_checked_idx ON health_checks (component, checked_at);

-- When someone reopened the group by hand: with first_seen and regressed_at, the start of the open
-- period that the next resolution closes.
ALTER TABLE error_groups ADD COLUMN reopened_at timestamptz;

-- Hourly counts per (project, level, environment), written by the worker in the same transaction as
-- the minute rollups: statistics and trends sum at most 24 rows per day per level and environment
-- instead of one row per (minute, group). Deleting a group subtracts its counts.
CREATE TABLE error_counts_hour (
    project_id   uuid NOT NULL,
    hour         timestamptz NOT NULL,
    level        text NOT NULL,
    environment  text NOT NULL,
    count        bigint NOT NULL,
    PRIMARY KEY (project_id, hour, level, environment)
);
INSERT INTO error_counts_hour (project_id, hour, level, environment, count)
SELECT project_id, date_trunc('hour', minute, 'UTC'), level, environment, sum(count)
FROM error_counts_minute GROUP BY 1, 2, 3, 4;
