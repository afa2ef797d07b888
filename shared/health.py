"""Health reports in the IETF health-check format (draft-inadarei-api-health-check): `status` is
`pass`, `warn` or `fail`, and `checks` maps "component:measurement" to observations.

The gateway serves them under /health/ and `collect health` prints them, from the same functions.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

import psycopg2
import redis

from shared.heartbeat_middleware import heartbeat_key

logger = logging.getLogger(__name__)

HEALTH_JSON = "application/health+json"
# The services whose workers report heartbeats; each one's worker consumes the queue of its name.
SERVICES = ("upload", "export", "control")
# Queued messages sampled from the head of a queue to find the oldest one (the queue is FIFO, but
# messages a stopped worker had prefetched are put back at its tail).
OLDEST_SAMPLE = 100

# The documented shape of every health report (OpenAPI component `Health`).
HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A health report in the IETF health-check format (draft-inadarei-api-health-check).",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": ["pass", "warn", "fail"]},
        "description": {"type": "string"},
        "serviceId": {"type": "string"},
        "checks": {
            "type": "object",
            "description": "Observations by `component:measurement`.",
            "additionalProperties": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {"type": "string", "enum": ["pass", "warn", "fail"]},
                        "componentId": {"type": "string"},
                        "componentType": {"type": "string"},
                        "observedValue": {"type": ["number", "string", "boolean", "null"]},
                        "observedUnit": {"type": "string"},
                        "time": {"type": "string", "format": "date-time"},
                        "output": {"type": "string"},
                    },
                },
            },
        },
    },
}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _overall(checks: dict[str, list[dict[str, Any]]]) -> str:
    statuses = {observation["status"] for observations in checks.values() for observation in observations}
    return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"


# (words in the driver's message, the general reason shown to anyone), first match wins. The driver's
# messages name hosts, ports, socket paths, users and databases: those go to the log only.
_REASONS = (
    (("timeout", "timed out"), "timeout"),
    (("connection refused", "no such file or directory", "error 111 ", "error 2 "), "connection refused"),
    (("authentication", "password", "pg_hba.conf", "noauth", "wrongpass", "permission denied"),
     "authentication failed"),
    (("does not exist",), "database or role does not exist"),
    (("starting up", "shutting down", "in recovery", "loading the dataset"),
     "server starting up or shutting down"),
    (("too many connections", "too many clients", "max number of clients", "pool exhausted"),
     "too many connections"),
    (("could not translate host name", "name or service not known", "nodename nor servname"),
     "host name not resolved"),
    (("server closed the connection", "connection already closed", "terminating connection",
      "connection reset", "broken pipe", "closed by server", "connection lost"), "connection lost"),
)


def failure_reason(exc: BaseException) -> str:
    """Why a dependency failed, in general terms that are safe to show anyone ("connection refused",
    "timeout", "authentication failed", ...): never a host name, port, user or database name."""
    if isinstance(exc, TimeoutError | redis.TimeoutError | psycopg2.extensions.QueryCanceledError):
        return "timeout"
    if isinstance(exc, redis.AuthenticationError):
        return "authentication failed"
    message = str(exc).lower()
    for words, reason in _REASONS:
        if any(word in message for word in words):
            return reason
    return "unavailable"


def report_failure(component: str, exc: BaseException) -> str:
    """Log the full cause of a dependency failure (the operator's view, with its details) and return the
    general reason to show the caller."""
    reason = failure_reason(exc)
    logger.warning("%s unavailable (%s): %s: %s", component, reason, type(exc).__name__, str(exc).strip())
    return reason


def redis_client(redis_url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)


def liveness() -> dict[str, Any]:
    """The process is up; checks nothing else."""
    return {"status": "pass", "description": "process is up"}


def readiness(db, redis_url: str, timeout: float = 2.0) -> dict[str, Any]:
    """Whether PostgreSQL and Redis answer within `timeout` seconds."""
    checks = {"postgresql:connection": [_check_postgres(db, timeout)],
              "redis:connection": [_check_redis(redis_url, timeout)]}
    return {"status": _overall(checks), "description": "PostgreSQL and Redis reachable", "checks": checks}


def _check_postgres(db, timeout: float) -> dict[str, Any]:
    observation = {"componentType": "datastore", "time": _now_iso()}
    # A connection of its own, not the pool's: connecting is bounded by the timeout too, and a busy
    # pool does not make the service look down.
    try:
        conn = psycopg2.connect(db.dsn, connect_timeout=max(1, math.ceil(timeout)),
                                options=f"-c statement_timeout={int(timeout * 1000)}")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        finally:
            conn.close()
        return {**observation, "status": "pass"}
    except Exception as exc:  # any failure means "not ready", whatever its cause
        return {**observation, "status": "fail", "output": report_failure("PostgreSQL", exc)}


def _check_redis(redis_url: str, timeout: float) -> dict[str, Any]:
    observation = {"componentType": "datastore", "time": _now_iso()}
    client = redis_client(redis_url, timeout)
    try:
        client.ping()
        return {**observation, "status": "pass"}
    except Exception as exc:
        return {**observation, "status": "fail", "output": report_failure("Redis", exc)}
    finally:
        client.close()


def live_workers(client: redis.Redis, service: str, namespace: str = "dramatiq") -> list[dict[str, Any]]:
    """The heartbeats of the live workers that consume the service's queue."""
    beats = []
    for key in client.scan_iter(match=heartbeat_key(namespace, "*"), count=500):
        raw = client.get(key)
        if raw is None:  # expired since the scan saw it
            continue
        beat = json.loads(raw)
        if service in beat.get("queues", []):
            beats.append(beat)
    return beats


def oldest_message_age(client: redis.Redis, queue: str, namespace: str = "dramatiq",
                       now: float | None = None) -> float | None:
    """Seconds the oldest message waiting in the queue has waited, or None when it is empty.

    Reads Dramatiq's Redis broker layout: the list `<namespace>:<queue>` of message ids and the hash
    `<namespace>:<queue>.msgs` of encoded messages. A delayed message waits from its eta, not from
    when it was sent."""
    now = time.time() if now is None else now
    queue_key = f"{namespace}:{queue}"
    message_ids = client.lrange(queue_key, 0, OLDEST_SAMPLE - 1)
    if not message_ids:
        return None
    waiting_since = []
    for raw in client.hmget(f"{queue_key}.msgs", message_ids):
        if raw is None:  # acknowledged since
            continue
        message = json.loads(raw)
        eta = message.get("options", {}).get("eta") or 0
        waiting_since.append(max(message["message_timestamp"], eta) / 1000)
    if not waiting_since:
        return None
    return round(max(0.0, now - min(waiting_since)), 3)


def service_health(redis_url: str, service: str, *, queue_age_warn_seconds: float, timeout: float = 2.0,
                   namespace: str = "dramatiq") -> dict[str, Any]:
    """How many of the service's workers are alive (fail when none), how many messages wait in its queue
    and how long the oldest has waited (warn past `queue_age_warn_seconds`). Raises KeyError for a
    service that is not one of SERVICES."""
    if service not in SERVICES:
        raise KeyError(service)
    now = _now_iso()
    client = redis_client(redis_url, timeout)
    try:
        workers = live_workers(client, service, namespace)
        depth = client.llen(f"{namespace}:{service}")
        oldest = oldest_message_age(client, service, namespace)
    except redis.RedisError as exc:
        checks = {"redis:connection": [{"componentType": "datastore", "status": "fail", "time": now,
                                        "output": report_failure("Redis", exc)}]}
        return {"status": "fail", "serviceId": service, "description": f"{service} workers", "checks": checks}
    finally:
        client.close()
    checks = {
        "workers:alive": [{
            "componentId": service, "componentType": "component", "observedValue": len(workers),
            "observedUnit": "workers", "status": "pass" if workers else "fail", "time": now,
            **({} if workers else {"output": f"no {service} worker has sent a heartbeat recently"}),
        }],
        "queue:depth": [{
            "componentId": service, "componentType": "component", "observedValue": depth,
            "observedUnit": "messages", "status": "pass", "time": now,
        }],
        "queue:oldestMessageAge": [{
            "componentId": service, "componentType": "component", "observedValue": oldest or 0,
            "observedUnit": "s", "time": now,
            **({"status": "warn", "output": f"a message has waited {oldest:.0f}s "
                                            f"(more than {queue_age_warn_seconds}s)"}
               if oldest is not None and oldest > queue_age_warn_seconds else {"status": "pass"}),
        }],
    }
    return {"status": _overall(checks), "serviceId": service, "description": f"{service} workers",
            "checks": checks}
