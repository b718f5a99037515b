-- The ingest pipeline: projects, API keys, error groups, their events and per-minute rollups.
-- Every row a client can reach carries project_id; cross-project reads answer 404 in the API.

CREATE TABLE projects (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT projects_name_unique UNIQUE (name)
);

-- The default project every installation starts with; `make run`'s dev key lives here.
INSERT INTO projects (id, name) VALUES ('00000000-0000-0000-0000-000000000001', 'default');

-- Only the sha256 of a key is stored; the raw key is shown once at creation.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    project_id   uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name         text NOT NULL,
    key_hash     bytea NOT NULL,
    key_preview  text NOT NULL,
    permissions  text[] NOT NULL,
    expires_at   timestamptz,
    last_used    timestamptz,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_key_hash_unique UNIQUE (key_hash),
    CONSTRAINT api_keys_permissions_known CHECK (permissions <@ ARRAY['ingest', 'read', 'write', 'admin']::text[])
);
CREATE INDEX api_keys_project_idx ON api_keys (project_id);

-- One row per (project, fingerprint): the contract's "error". The id is derived from
-- (project, fingerprint) so every worker computes the same id without a lookup.
CREATE TABLE error_groups (
    id                  uuid PRIMARY KEY,
    project_id          uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    fingerprint         text NOT NULL,
    grouping_version    int NOT NULL,
    normalized_message  text NOT NULL,
    grouping_frames     jsonb NOT NULL DEFAULT '[]',
    custom_fingerprint  boolean NOT NULL DEFAULT false,
    -- latest sample of the group, shown by the read API
    level               text NOT NULL,
    message             text NOT NULL,
    stack_trace         text,
    context             jsonb,
    source              text NOT NULL,
    environment         text NOT NULL,
    url                 text,
    user_agent          text,
    ip_address          text,
    release             text,
    latest_event_id     uuid,
    count               bigint NOT NULL,
    first_seen          timestamptz NOT NULL,
    last_seen           timestamptz NOT NULL,
    resolved            boolean NOT NULL DEFAULT false,
    resolved_at         timestamptz,
    regressed           boolean NOT NULL DEFAULT false,
    regressed_at        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT error_groups_fingerprint_unique UNIQUE (project_id, fingerprint),
    CONSTRAINT error_groups_level_known CHECK (level IN ('error', 'warning', 'info', 'debug'))
);
CREATE INDEX error_groups_project_last_seen_idx ON error_groups (project_id, last_seen DESC);

-- Each occurrence. The primary key on the event id is what makes redelivery harmless.
CREATE TABLE events (
    id           uuid PRIMARY KEY,
    project_id   uuid NOT NULL,
    group_id     uuid NOT NULL,
    received_at  timestamptz NOT NULL,
    level        text NOT NULL,
    message      text NOT NULL,
    stack_trace  text,
    context      jsonb,
    source       text NOT NULL,
    environment  text NOT NULL,
    url          text,
    user_agent   text,
    ip_address   text,
    release      text,
    extra        jsonb
);
CREATE INDEX events_group_received_idx ON events (group_id, received_at DESC);
-- The retention job deletes oldest first in bounded batches.
CREATE INDEX events_received_idx ON events (received_at);

-- Per-minute counts: what stats, trends and alert thresholds read instead of scanning events.
CREATE TABLE error_counts_minute (
    project_id   uuid NOT NULL,
    group_id     uuid NOT NULL,
    minute       timestamptz NOT NULL,
    level        text NOT NULL,
    environment  text NOT NULL,
    count        bigint NOT NULL,
    PRIMARY KEY (project_id, minute, group_id, level, environment)
);
CREATE INDEX error_counts_minute_group_idx ON error_counts_minute (group_id, minute);

-- Liveness of every worker and alerter instance, written every few seconds; the monitoring API
-- reads it to report which processes are alive and what they last did.
CREATE TABLE service_heartbeats (
    service     text NOT NULL,
    instance    text NOT NULL,
    started_at  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (service, instance)
);
