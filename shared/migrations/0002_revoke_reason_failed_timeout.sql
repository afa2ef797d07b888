-- A failed task left alone past FAILED_TASK_TTL_HOURS is revoked with reason 'failed_timeout'.
ALTER TABLE tasks DROP CONSTRAINT tasks_revoke_reason_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_revoke_reason_check
    CHECK (revoke_reason IN ('user', 'pause_timeout', 'failed_timeout'));
CREATE INDEX tasks_failed_finished ON tasks (finished_at) WHERE state = 'failed';
