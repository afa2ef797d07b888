-- What /metrics reads from PostgreSQL (shared/metrics.py).

-- Rows and bytes the task batches processed, by task kind. Each batch adds its counts inside its own
-- transaction, so a batch that rolls back (pause, revoke, crash) is not counted and a redone batch is
-- counted once: the totals are exact across every worker on every machine, and survive restarts.
CREATE TABLE task_throughput (
    kind    text PRIMARY KEY,
    rows    bigint NOT NULL DEFAULT 0,
    bytes   bigint NOT NULL DEFAULT 0,
    batches bigint NOT NULL DEFAULT 0
);

-- Every scrape counts tasks by kind and state (and pause-timeout revocations): an index-only scan
-- instead of reading the wide task rows. save_progress changes none of these columns, so progress
-- updates stay HOT updates.
CREATE INDEX tasks_kind_state ON tasks (kind, state) INCLUDE (revoke_reason);
