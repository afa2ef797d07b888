"""One typed settings object, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path


class ConfigError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    redis_url: str | None
    port: int = 8000
    pause_timeout_seconds: int = 300
    max_upload_bytes: int = 1024 * 1024 * 1024
    export_retention_hours: int = 72
    # A worker holds a task for this long after each batch; a crashed worker's task is taken over after it.
    task_lease_seconds: int = 30
    upload_batch_rows: int = 20000
    # An upload batch also closes once its rows take this many bytes (COPY data), so memory is bounded by
    # bytes, not rows; a row longer than this in the file is rejected.
    upload_batch_bytes: int = 16 * 1024 * 1024
    # Batches of one upload written at once, each with a COPY on a connection of its own (shared.pipeline).
    upload_copy_streams: int = 2
    # A row with a field (cell) longer than this is rejected.
    max_field_bytes: int = 1024 * 1024
    export_batch_rows: int = 40000
    # Pages of one export read at once, each on a PostgreSQL connection of its own (services.export.pages).
    export_parallel_pages: int = 2
    # At most this many tasks of one organization run at once (paused ones do not count); the others wait
    # in `queued`, in order (shared.fairness), so no organization takes every worker thread.
    org_max_running_tasks: int = 2
    # An idle worker looks for new messages at least this often (ms): how long a resumed task can wait
    # before a worker picks it up (shared.broker.PromptRedisBroker).
    worker_idle_poll_ms: int = 50
    data_dir: Path = Path(".data")
    db_pool_size: int = 10
    # Prefix of the broker's Redis keys: separate namespaces on one Redis never see each other's messages.
    broker_namespace: str = "dramatiq"
    # /health/{service} warns when a queued message has waited longer than this.
    queue_age_warn_seconds: int = 60
    # gunicorn worker processes of one gateway (services/gateway/gunicorn_config.py, `collect up`).
    gateway_workers: int = 2
    # Connecting to PostgreSQL or Redis, and a Redis command, give up after this long: a request that
    # finds a dependency down is answered 503 quickly instead of hanging.
    dependency_timeout_seconds: int = 2
    # The gateway closes a connection that has not sent its whole request header block within this long.
    header_timeout_seconds: int = 10
    # The gateway aborts a request whose body sends nothing for this long (an upload: 400, nothing stored).
    body_stall_seconds: int = 30
    # `collect up` gives the Prometheus exporters of its worker domains this port and the next ones.
    worker_metrics_port: int = 9191
    # A worker retries a batch that met a transient database error (lost connection, server restart,
    # serialization failure, deadlock) for this long before it fails the task.
    transient_retry_seconds: int = 300
    # A failed task nobody resumes or revokes is revoked (its work rolled back) after this long.
    failed_task_ttl_hours: int = 72
    # A completed upload's source file is kept this long (for audits and re-imports), then deleted.
    upload_file_retention_hours: int = 72

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            port=_int(env, "PORT", 8000, minimum=1),
            pause_timeout_seconds=_int(env, "PAUSE_TIMEOUT_SECONDS", 300, minimum=1),
            max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", 1024 * 1024 * 1024, minimum=1),
            export_retention_hours=_int(env, "EXPORT_RETENTION_HOURS", 72, minimum=1),
            task_lease_seconds=_int(env, "TASK_LEASE_SECONDS", 30, minimum=1),
            upload_batch_rows=_int(env, "UPLOAD_BATCH_ROWS", 20000, minimum=1),
            upload_batch_bytes=_int(env, "UPLOAD_BATCH_BYTES", 16 * 1024 * 1024, minimum=1024),
            upload_copy_streams=_int(env, "UPLOAD_COPY_STREAMS", 2, minimum=1),
            max_field_bytes=_int(env, "MAX_FIELD_BYTES", 1024 * 1024, minimum=1),
            export_batch_rows=_int(env, "EXPORT_BATCH_ROWS", 40000, minimum=1),
            export_parallel_pages=_int(env, "EXPORT_PARALLEL_PAGES", 2, minimum=1),
            org_max_running_tasks=_int(env, "ORG_MAX_RUNNING_TASKS", 2, minimum=1),
            worker_idle_poll_ms=_int(env, "WORKER_IDLE_POLL_MS", 50, minimum=1),
            data_dir=Path(env.get("COLLECT_DATA_DIR") or ".data"),
            db_pool_size=_int(env, "DB_POOL_SIZE", 10, minimum=2),
            broker_namespace=env.get("BROKER_NAMESPACE") or "dramatiq",
            queue_age_warn_seconds=_int(env, "QUEUE_AGE_WARN_SECONDS", 60, minimum=1),
            gateway_workers=_int(env, "GATEWAY_WORKERS", 2, minimum=1),
            dependency_timeout_seconds=_int(env, "DEPENDENCY_TIMEOUT_SECONDS", 2, minimum=1),
            header_timeout_seconds=_int(env, "HEADER_TIMEOUT_SECONDS", 10, minimum=1),
            body_stall_seconds=_int(env, "BODY_STALL_SECONDS", 30, minimum=1),
            worker_metrics_port=_int(env, "WORKER_METRICS_PORT", 9191, minimum=1),
            transient_retry_seconds=_int(env, "TRANSIENT_RETRY_SECONDS", 300, minimum=1),
            failed_task_ttl_hours=_int(env, "FAILED_TASK_TTL_HOURS", 72, minimum=1),
            upload_file_retention_hours=_int(env, "UPLOAD_FILE_RETENTION_HOURS", 72, minimum=1),
        )

    def with_urls(self, database_url: str, redis_url: str) -> Settings:
        return replace(self, database_url=database_url, redis_url=redis_url)

    def require_urls(self) -> tuple[str, str]:
        """Both connection URLs; raises ConfigError when either is missing."""
        if not self.database_url or not self.redis_url:
            raise ConfigError("DATABASE_URL and REDIS_URL must be set (or run `collect up` to start embedded ones)")
        return self.database_url, self.redis_url
