"""create_app: the gateway composes the services' resources into one WSGI app."""

from __future__ import annotations

import falcon

from services import export, upload
from services.control.commands import TaskControl
from services.control.resources import (
    PauseResource,
    ResumeResource,
    RevokeResource,
    TaskListResource,
    TaskResource,
)
from services.dashboard.resources import add_dashboard_routes
from services.export.resources import DownloadResource, ExportResource
from services.gateway.conditional import ConditionalGet
from services.gateway.docs import add_docs_routes
from services.gateway.health import LiveResource, ReadyResource, ServiceHealthResource
from services.gateway.metrics import MetricsResource, RequestMetrics
from services.gateway.middleware import ApiKeyAuth, RequestId
from services.gateway.problems import (
    body_stalled_handler,
    handle_unavailable,
    handle_unexpected,
    serialize_problem,
)
from services.upload.resources import UploadResource
from shared.db import UNAVAILABLE_ERRORS
from shared.wake import BROKER_UNAVAILABLE

TASK_KINDS = (upload.KIND, export.KIND)


def create_app(db, broker, settings) -> falcon.App:
    """The gateway app. Its collaborators (database, broker, settings) are passed in, never imported."""
    app = falcon.App(middleware=[RequestMetrics(), RequestId(), ApiKeyAuth(db), ConditionalGet()])
    app.req_options.strip_url_path_trailing_slash = True
    app.set_error_serializer(serialize_problem)
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(UNAVAILABLE_ERRORS + BROKER_UNAVAILABLE, handle_unavailable)
    # A socket read timeout while reading the request body (the worker sets it to BODY_STALL_SECONDS).
    app.add_error_handler(TimeoutError, body_stalled_handler(settings.body_stall_seconds))

    control = TaskControl(db, broker, settings)
    app.add_route("/api/upload-file", UploadResource(db, broker, settings))
    app.add_route("/api/export", ExportResource(db, broker))
    app.add_route("/api/pause/{task_id:uuid}", PauseResource(control))
    app.add_route("/api/resume/{task_id:uuid}", ResumeResource(control))
    app.add_route("/api/revoke/{task_id:uuid}", RevokeResource(control))
    app.add_route("/api/tasks", TaskListResource(db, TASK_KINDS))
    app.add_route("/api/tasks/{task_id:uuid}", TaskResource(db))
    app.add_route("/api/tasks/{task_id:uuid}/download", DownloadResource(db, settings))
    app.add_route("/health/live", LiveResource())
    app.add_route("/health/ready", ReadyResource(db, settings.redis_url))
    service_health = ServiceHealthResource(settings.redis_url, settings.queue_age_warn_seconds,
                                           namespace=broker.namespace)
    app.add_route("/health/{service}", service_health)
    app.add_route("/metrics", MetricsResource(db, settings.redis_url, namespace=broker.namespace))
    add_docs_routes(app)
    add_dashboard_routes(app)
    return app
