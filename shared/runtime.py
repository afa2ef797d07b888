"""The collaborators of one worker or gateway process, built once from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import dramatiq

from shared.broker import create_broker
from shared.config import Settings
from shared.db import Database


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    db: Database
    broker: dramatiq.Broker


@cache
def runtime() -> Runtime:
    settings = Settings.from_env()
    database_url, redis_url = settings.require_urls()
    db = Database(database_url, maxconn=settings.db_pool_size, connect_timeout=settings.dependency_timeout_seconds)
    return Runtime(settings=settings, db=db, broker=create_broker(
        redis_url, db, settings.broker_namespace, recovery_sweep_after=settings.task_lease_seconds + 1,
        timeout=settings.dependency_timeout_seconds, idle_poll_ms=settings.worker_idle_poll_ms))
