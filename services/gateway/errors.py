"""The gateway's error handlers: an unexpected exception (500), an unavailable dependency (503 with
Retry-After) and a stalled request body (400), each answered as a problem."""

from __future__ import annotations

import logging
import uuid

import falcon
import redis

from services.http.problems import Problem
from shared.health import report_failure

logger = logging.getLogger("collect.gateway")


def handle_unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params) -> None:
    """Any exception that is not an HTTP error: logged with the request id, answered 500 without details."""
    if isinstance(exc, falcon.HTTPError):
        raise exc
    request_id = getattr(req.context, "request_id", None) or str(uuid.uuid4())
    logger.exception("unhandled error in %s %s (request_id=%s)", req.method, req.path, request_id)
    raise Problem(falcon.HTTP_500, f"an unexpected error occurred; quote request id {request_id}",
                  title="Internal Server Error")


# Seconds a client is asked to wait (Retry-After) when a dependency is down: about how long a restart or
# failover of PostgreSQL or Redis takes.
RETRY_AFTER_SECONDS = 5


def handle_unavailable(req: falcon.Request, resp: falcon.Response, exc: Exception, params) -> None:
    """PostgreSQL or Redis cannot be reached: 503 with Retry-After, naming the dependency and the general
    reason; the details (host, port, database) go to the log only."""
    dependency = "redis" if isinstance(exc, redis.RedisError) else "postgresql"
    reason = report_failure("Redis" if dependency == "redis" else "PostgreSQL", exc)
    name = "the task queue (Redis)" if dependency == "redis" else "the database (PostgreSQL)"
    raise Problem(falcon.HTTP_503, f"{name} is unavailable ({reason}); retry in a few seconds",
                  title="Service Unavailable", headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                  dependency=dependency, reason=reason)


def body_stalled_handler(stall_seconds: int):
    """A handler for a request body that sent nothing for `stall_seconds` (the socket's read timeout,
    set by the gateway's worker): 400. Whatever the request was storing has been rolled back by then,
    since the timeout is raised out of the read inside its transaction."""

    def handle_body_stalled(req: falcon.Request, resp: falcon.Response, exc: Exception, params) -> None:
        logger.warning("%s %s: the request body stalled for %ss; aborted", req.method, req.path, stall_seconds)
        raise Problem(falcon.HTTP_400, f"the request body stalled: nothing arrived for {stall_seconds} seconds "
                                       "(BODY_STALL_SECONDS); nothing was stored", title="Request Body Stalled",
                      headers={"Connection": "close"})

    return handle_body_stalled
