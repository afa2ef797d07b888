-- Organizations, API keys, form responses, stored files and tasks.

CREATE TABLE organizations (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    key_sha256      bytea NOT NULL UNIQUE,
    key_prefix      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);

-- A form's question columns, in the order uploads first showed them.
CREATE TABLE forms (
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    form_id         text NOT NULL,
    questions       text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (organization_id, form_id)
);

CREATE TABLE tasks (
    id               uuid PRIMARY KEY,
    organization_id  uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    kind             text NOT NULL,
    queue_name       text NOT NULL,
    actor_name       text NOT NULL,
    state            text NOT NULL CHECK (state IN ('queued', 'running', 'pausing', 'paused',
                                                    'revoking', 'revoked', 'completed', 'failed')),
    params           jsonb NOT NULL DEFAULT '{}',
    progress_done    bigint NOT NULL DEFAULT 0,
    progress_total   bigint,
    progress_unit    text NOT NULL,
    checkpoint       jsonb,
    result           jsonb,
    error            jsonb,
    revoke_reason    text CHECK (revoke_reason IN ('user', 'pause_timeout')),
    lease_owner      uuid,
    lease_expires_at timestamptz,
    run_started_at   timestamptz,
    run_started_done bigint,
    enqueued_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    paused_at        timestamptz,
    pause_deadline   timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_org_created ON tasks (organization_id, created_at DESC, id DESC);
CREATE INDEX tasks_pause_deadline ON tasks (pause_deadline) WHERE state = 'paused';
CREATE INDEX tasks_active ON tasks (state) WHERE state IN ('queued', 'running', 'pausing', 'revoking');

CREATE TABLE task_events (
    id         bigserial PRIMARY KEY,
    task_id    uuid NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    at         timestamptz NOT NULL DEFAULT now(),
    from_state text,
    to_state   text NOT NULL,
    actor      text NOT NULL,
    reason     text
);
CREATE INDEX task_events_task ON task_events (task_id, id);

-- Files live in PostgreSQL so that gateways and workers on any machine reach them.
CREATE TABLE stored_files (
    id              uuid PRIMARY KEY,
    organization_id uuid NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    task_id         uuid REFERENCES tasks(id) ON DELETE CASCADE,
    purpose         text NOT NULL,
    filename        text,
    size_bytes      bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stored_files_task ON stored_files (task_id);

CREATE TABLE stored_file_chunks (
    file_id uuid NOT NULL REFERENCES stored_files(id) ON DELETE CASCADE,
    seq     integer NOT NULL,
    data    bytea NOT NULL,
    PRIMARY KEY (file_id, seq)
);
-- CSV compresses well; lz4 does it at a fraction of the default pglz's cost (a third of an upload's
-- storing time). Servers built without lz4 store the chunks uncompressed instead.
DO $$
BEGIN
    ALTER TABLE stored_file_chunks ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    ALTER TABLE stored_file_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
END
$$;

-- No foreign key on organization_id: its per-row check would cost a third of the upload's COPY time, and
-- rows are only ever written by an upload task of that organization.
CREATE TABLE responses (
    organization_id uuid NOT NULL,
    response_id     uuid NOT NULL,
    form_id         text NOT NULL,
    submitted_at    timestamptz NOT NULL,
    answers         jsonb NOT NULL,
    upload_task_id  uuid,
    PRIMARY KEY (organization_id, response_id)
);
CREATE INDEX responses_org_submitted ON responses (organization_id, submitted_at, response_id);
CREATE INDEX responses_upload_task ON responses (upload_task_id);
