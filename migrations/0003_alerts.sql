-- Alerting: rules, incidents, per-project channel integrations, and the notification outbox with
-- every delivery attempt. (The alerter's health checks go to `health_checks`, from 0002.)

-- A rule is evaluated by the alerter on its cron schedule. `last_evaluated_at` is the watermark of
-- new_error/regression rules ("since the last evaluation") and what stops two alerter replicas from
-- evaluating one rule twice for one tick (rows are claimed with FOR UPDATE SKIP LOCKED).
CREATE TABLE alert_rules (
    id                  uuid PRIMARY KEY,
    project_id          uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name                text NOT NULL,
    kind                text NOT NULL,
    threshold           bigint NOT NULL DEFAULT 0,
    time_window_secs    int NOT NULL,
    filter_level        text,
    filter_source       text,
    filter_environment  text,
    cooldown_secs       int NOT NULL DEFAULT 600,
    severity            text NOT NULL DEFAULT 'high',
    notifications       text[] NOT NULL DEFAULT '{}',
    enabled             boolean NOT NULL DEFAULT true,
    last_evaluated_at   timestamptz,
    last_triggered      timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_rules_kind_known CHECK (kind IN ('threshold', 'new_error', 'regression')),
    CONSTRAINT alert_rules_threshold_nonnegative CHECK (threshold >= 0),
    CONSTRAINT alert_rules_window_positive CHECK (time_window_secs > 0),
    CONSTRAINT alert_rules_cooldown_nonnegative CHECK (cooldown_secs >= 0),
    CONSTRAINT alert_rules_severity_known CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    CONSTRAINT alert_rules_channels_known CHECK (notifications <@ ARRAY['email', 'slack', 'webhook']::text[])
);
CREATE INDEX alert_rules_project_idx ON alert_rules (project_id, created_at);
CREATE INDEX alert_rules_enabled_idx ON alert_rules (last_evaluated_at) WHERE enabled;

-- Opened by a firing rule (or by hand through the API). A rule has at most one unresolved incident:
-- a rule that keeps firing updates it instead of opening another.
CREATE TABLE incidents (
    id             uuid PRIMARY KEY,
    project_id     uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    rule_id        uuid REFERENCES alert_rules (id) ON DELETE SET NULL,
    title          text NOT NULL,
    severity       text NOT NULL,
    status         text NOT NULL DEFAULT 'open',
    description    text,
    assigned_to    text,
    trigger_count  int NOT NULL DEFAULT 0,
    last_count     bigint,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz,
    CONSTRAINT incidents_severity_known CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    CONSTRAINT incidents_status_known CHECK (status IN ('open', 'investigating', 'resolved'))
);
CREATE UNIQUE INDEX incidents_one_unresolved_per_rule ON incidents (rule_id) WHERE status <> 'resolved';
CREATE INDEX incidents_project_idx ON incidents (project_id, created_at DESC);

-- One row per (project, channel). `config` holds the channel's settings, secrets included; the API
-- never returns the secrets and the alerter never logs them.
CREATE TABLE integrations (
    project_id       uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name             text NOT NULL,
    config           jsonb NOT NULL,
    enabled          boolean NOT NULL DEFAULT true,
    last_test        timestamptz,
    last_test_ok     boolean,
    last_test_error  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, name),
    CONSTRAINT integrations_name_known CHECK (name IN ('email', 'slack', 'webhook'))
);

-- The outbox: written in the transaction that fires the rule, sent afterwards by the delivery loop.
-- `idempotency_key` (rule, incident, window, channel) is unique, so a replayed firing cannot queue a
-- second copy, and is sent along so receivers can drop duplicates of an at-least-once delivery.
-- A row being sent is 'sending' with a lease (`locked_until`); a row whose lease ran out (the
-- alerter died mid-delivery) is claimed again.
CREATE TABLE notifications (
    id               uuid PRIMARY KEY,
    project_id       uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    rule_id          uuid REFERENCES alert_rules (id) ON DELETE SET NULL,
    incident_id      uuid REFERENCES incidents (id) ON DELETE SET NULL,
    channel          text NOT NULL,
    idempotency_key  text NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending',
    attempts         int NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    locked_until     timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    CONSTRAINT notifications_idempotency_key_unique UNIQUE (idempotency_key),
    CONSTRAINT notifications_channel_known CHECK (channel IN ('email', 'slack', 'webhook')),
    CONSTRAINT notifications_status_known CHECK (status IN ('pending', 'sending', 'delivered', 'failed'))
);
CREATE INDEX notifications_due_idx ON notifications (next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE INDEX notifications_project_idx ON notifications (project_id, created_at DESC);

-- Every attempt to send a notification (or an integration test), successful or not, so a silent
-- failure is visible.
CREATE TABLE delivery_attempts (
    id               uuid PRIMARY KEY,
    notification_id  uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    attempt          int NOT NULL,
    channel          text NOT NULL,
    project_id       uuid NOT NULL,
    started_at       timestamptz NOT NULL,
    duration_ms      double precision NOT NULL,
    success          boolean NOT NULL,
    http_status      int,
    error            text,
    CONSTRAINT delivery_attempts_once UNIQUE (notification_id, attempt)
);
CREATE INDEX delivery_attempts_channel_idx ON delivery_attempts (project_id, channel, started_at DESC);
