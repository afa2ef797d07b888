"""Health endpoints: liveness, readiness, and the workers of each service (reports from shared.health)."""

from __future__ import annotations

import json

import falcon

from services.http.problems import Problem
from shared import health
from shared.health import HEALTH_JSON
from shared.services import SERVICE_NAMES


def _reply(resp: falcon.Response, report: dict) -> None:
    resp.content_type = HEALTH_JSON
    resp.status = falcon.HTTP_503 if report["status"] == "fail" else falcon.HTTP_200
    resp.text = json.dumps(report)


def _health_response(description: str, example: dict) -> dict:
    return {"description": description,
            "content": {HEALTH_JSON: {"schema": {"$ref": "#/components/schemas/Health"}, "example": example}}}


_CHECK = {"componentType": "datastore", "time": "2026-11-27T23:00:00Z"}
_WORKERS = {"componentId": "upload", "componentType": "component", "observedUnit": "workers",
            "time": "2026-11-27T23:00:00Z"}
_DEPTH = {"componentId": "upload", "componentType": "component", "observedUnit": "messages",
          "time": "2026-11-27T23:00:00Z"}
_AGE = {"componentId": "upload", "componentType": "component", "observedUnit": "s",
        "time": "2026-11-27T23:00:00Z"}
HEALTH_RESPONSES = {
    "Live": _health_response("The process is up.", {"status": "pass", "description": "process is up"}),
    "Ready": _health_response("PostgreSQL and Redis answer.", {
        "status": "pass", "description": "PostgreSQL and Redis reachable",
        "checks": {"postgresql:connection": [{**_CHECK, "status": "pass"}],
                   "redis:connection": [{**_CHECK, "status": "pass"}]}}),
    "NotReady": _health_response("PostgreSQL or Redis does not answer.", {
        "status": "fail", "description": "PostgreSQL and Redis reachable",
        "checks": {"postgresql:connection": [{**_CHECK, "status": "pass"}],
                   "redis:connection": [{**_CHECK, "status": "fail",
                                         "output": "Timeout connecting to server"}]}}),
    "ServiceUp": _health_response("Workers are alive (`warn`: a queued message has waited long).", {
        "status": "warn", "serviceId": "upload", "description": "upload workers",
        "checks": {"workers:alive": [{**_WORKERS, "observedValue": 2, "status": "pass"}],
                   "queue:depth": [{**_DEPTH, "observedValue": 14, "status": "pass"}],
                   "queue:oldestMessageAge": [{**_AGE, "observedValue": 95.2, "status": "warn",
                                               "output": "a message has waited 95s (more than 60s)"}]}}),
    "ServiceDown": _health_response("No worker of the service is alive.", {
        "status": "fail", "serviceId": "upload", "description": "upload workers",
        "checks": {"workers:alive": [{**_WORKERS, "observedValue": 0, "status": "fail",
                                      "output": "no upload worker has sent a heartbeat recently"}],
                   "queue:depth": [{**_DEPTH, "observedValue": 3, "status": "pass"}],
                   "queue:oldestMessageAge": [{**_AGE, "observedValue": 12.0, "status": "pass"}]}}),
}


class LiveResource:
    openapi_components = {"responses": HEALTH_RESPONSES}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """The process is up (checks no dependency).
        ---
        get:
          summary: Liveness
          operationId: healthLive
          tags: [health]
          responses:
            200: {$ref: '#/components/responses/Live'}
        """
        _reply(resp, health.liveness())


class ReadyResource:
    openapi_components = {"responses": HEALTH_RESPONSES}

    def __init__(self, db, redis_url: str, timeout: float = 2.0) -> None:
        self.db = db
        self.redis_url = redis_url
        self.timeout = timeout

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """PostgreSQL and Redis are reachable within a short timeout.
        ---
        get:
          summary: Readiness
          operationId: healthReady
          tags: [health]
          responses:
            200: {$ref: '#/components/responses/Ready'}
            503: {$ref: '#/components/responses/NotReady'}
        """
        _reply(resp, health.readiness(self.db, self.redis_url, self.timeout))


class ServiceHealthResource:
    openapi_components = {
        "responses": HEALTH_RESPONSES,
        "parameters": {"service": {"name": "service", "in": "path", "required": True,
                                   "schema": {"type": "string", "enum": list(SERVICE_NAMES)}}},
    }

    def __init__(self, redis_url: str, queue_age_warn_seconds: float, timeout: float = 2.0,
                 namespace: str = "dramatiq") -> None:
        self.redis_url = redis_url
        self.queue_age_warn_seconds = queue_age_warn_seconds
        self.timeout = timeout
        # The broker's key prefix: queues and heartbeats live under it.
        self.namespace = namespace

    def on_get(self, req: falcon.Request, resp: falcon.Response, service: str) -> None:
        """How many of a service's workers are alive, its queue depth and the age of its oldest queued
        message.
        ---
        get:
          summary: Health of a service's workers
          operationId: healthService
          tags: [health]
          parameters:
            - service
          responses:
            200: {$ref: '#/components/responses/ServiceUp'}
            404: {$ref: '#/components/responses/NotFound'}
            503: {$ref: '#/components/responses/ServiceDown'}
        """
        if service not in SERVICE_NAMES:
            raise Problem(falcon.HTTP_404, f"no service {service!r}; the services are {', '.join(SERVICE_NAMES)}",
                          title="Unknown Service")
        _reply(resp, health.service_health(self.redis_url, service, timeout=self.timeout,
                                           namespace=self.namespace,
                                           queue_age_warn_seconds=self.queue_age_warn_seconds))
