-- Access control: per-key rate-limit overrides and the team members of each project.

-- Requests per window by scope ("ingest", "analytics", "other"), overriding the defaults from the
-- environment for this one key; '{}' means the defaults.
ALTER TABLE api_keys ADD COLUMN rate_limits jsonb NOT NULL DEFAULT '{}';
ALTER TABLE api_keys ADD CONSTRAINT api_keys_rate_limits_object CHECK (jsonb_typeof(rate_limits) = 'object');

-- People of a project, with the contract's roles. An invitation creates the row ('invited'); the
-- person becomes 'active' when they first sign in.
CREATE TABLE team_members (
    id           uuid PRIMARY KEY,
    project_id   uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name         text NOT NULL,
    email        text NOT NULL,
    role         text NOT NULL,
    status       text NOT NULL DEFAULT 'invited',
    -- the key that sent the invitation (audit); kept when the key is deleted
    invited_by   uuid REFERENCES api_keys (id) ON DELETE SET NULL,
    last_active  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT team_members_role_known CHECK (role IN ('owner', 'admin', 'developer', 'viewer')),
    CONSTRAINT team_members_status_known CHECK (status IN ('invited', 'active', 'disabled'))
);
-- One membership per e-mail address and project, whatever its case; a second invitation is a 409.
CREATE UNIQUE INDEX team_members_project_email_unique ON team_members (project_id, lower(email));
