"""The collaborators of one worker or gateway process (settings, database pool, the broker with its
middleware), built once from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from periodiq import PeriodiqMiddleware
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from shared.config import Settings
from shared.control_middleware import ControlMiddleware
from shared.db import Database
from shared.heartbeat_middleware import Heartbeat
from shared.log_context_middleware import LogContext
from shared.worker_metrics import WorkerPrometheus


def create_broker(redis_url: str, db, namespace: str = "dramatiq",
                  recovery_sweep_after: float | None = None, timeout: float | None = None) -> RedisBroker:
    """A Redis broker with the task-control, heartbeat and log-context middleware, installed as
    Dramatiq's global broker. With `timeout`, connecting to Redis and each command give up after that
    many seconds (redis.TimeoutError) instead of waiting on a server that does not answer."""
    # One retry (redis-py's default is three): a blip is absorbed, and an unanswering Redis costs at most
    # two timeouts, so a gateway request that sends a message still answers within seconds.
    client = redis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                  retry=Retry(ExponentialWithJitterBackoff(), 1))
    broker = RedisBroker(client=client, namespace=namespace)
    broker.add_middleware(PeriodiqMiddleware(skip_delay=30))
    broker.add_middleware(ControlMiddleware(db, recovery_sweep_after))
    broker.add_middleware(Heartbeat())
    broker.add_middleware(LogContext())
    broker.add_middleware(WorkerPrometheus())
    dramatiq.set_broker(broker)
    return broker


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
        timeout=settings.dependency_timeout_seconds))
