"""The services (worker domains), defined once: the gateway, the `collect` command, health, metrics and
the deployment tests all read this list.

A service is a package under services/ with an `actors` module that its Dramatiq worker runs, consuming
one queue. Listed by module name (a string), so shared/ never imports services/.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    """One worker domain."""

    name: str
    # The Redis queue its worker consumes (`dramatiq <actors> --queues <queue>`).
    queue: str
    # The module with its actors; also imported by the scheduler when it declares periodic actors.
    actors_module: str
    # Worker threads `collect up` runs it with.
    threads: int
    # Its worker exporter's port under `collect up` is WORKER_METRICS_PORT + this (README promises
    # upload, control, export in that order).
    metrics_port_offset: int
    # It declares periodic actors (periodiq schedules them).
    periodic: bool = False
    # The kind of the tasks it runs, None for the control service (it runs no task of its own).
    task_kind: str | None = None


UPLOAD = Service("upload", queue="upload", actors_module="services.upload.actors", threads=4,
                 metrics_port_offset=0, periodic=True, task_kind="upload")
EXPORT = Service("export", queue="export", actors_module="services.export.actors", threads=4,
                 metrics_port_offset=2, periodic=True, task_kind="export")
CONTROL = Service("control", queue="control", actors_module="services.control.actors", threads=2,
                  metrics_port_offset=1, periodic=True)

SERVICES: tuple[Service, ...] = (UPLOAD, EXPORT, CONTROL)
SERVICE_NAMES: tuple[str, ...] = tuple(service.name for service in SERVICES)
# The kinds of task the API accepts (the `kind` filter of GET /api/tasks/).
TASK_KINDS: tuple[str, ...] = tuple(service.task_kind for service in SERVICES if service.task_kind)
