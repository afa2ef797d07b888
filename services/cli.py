"""The `collect` command: run the whole stack, migrate, manage API keys; and the client commands
(upload, export, pause, resume, revoke, tasks, task, download, login) of services/client/."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import click

from services.client.commands import add_client_commands, connection_options
from shared.config import ConfigError, Settings
from shared.db import Database, DatabaseUnreachable, ensure_database, without_password
from shared.migrate import migrate
from shared.services import SERVICE_NAMES, SERVICES, Service

# One Dramatiq worker process per service domain, in the order of their exporters' ports.
WORKER_DOMAINS = tuple(sorted(SERVICES, key=lambda service: service.metrics_port_offset))
# periodiq imports every module that declares periodic actors: the control sweep, export and upload
# file retention.
SCHEDULER_MODULES = tuple(service.actors_module for service in WORKER_DOMAINS if service.periodic)
# `collect up` starts a process that exits again, unless it exits more than this often.
MAX_RESTARTS, RESTART_WINDOW_SECONDS = 5, 60
# The gateway's gunicorn settings (worker class with header deadline, JSON log lines, ...): one place.
GUNICORN_CONFIG = "python:services.gateway.gunicorn_config"


def worker_command(service: Service, dramatiq: str = "dramatiq") -> list[str]:
    """The command that runs a service's worker: one process with the service's threads on its queue
    (docker-compose.yml and deploy/k8s/ run the same; tests/deploy checks them)."""
    return [dramatiq, service.actors_module, "--skip-logging", "--queues", service.queue,
            "--processes", "1", "--threads", str(service.threads)]


def scheduler_command(python: str = "python") -> list[str]:
    """periodiq, made to outlive a Redis outage (services/control/scheduler.py), with every module that
    declares periodic actors."""
    return [python, "-m", "services.control.scheduler", *SCHEDULER_MODULES]


def gunicorn_command(app: str = "services.gateway.wsgi:app") -> list[str]:
    """The gateway's gunicorn command line (scripts/bench runs its limit app with it too). Every gunicorn
    setting (bind from PORT, worker class, workers, threads) is in GUNICORN_CONFIG."""
    return [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "--config", GUNICORN_CONFIG, app]


def stack_commands() -> list[list[str]]:
    """What `up` starts, in this order: the gateway, one worker per service domain, the scheduler."""
    python_bin = os.path.dirname(sys.executable)
    return [
        gunicorn_command(),
        *[worker_command(service, os.path.join(python_bin, "dramatiq")) for service in WORKER_DOMAINS],
        scheduler_command(sys.executable),
    ]


def _settings_with_database(start_redis: bool = False) -> tuple[Settings, object | None]:
    """Settings whose URLs point at real servers: the environment's, or embedded ones started now."""
    settings = Settings.from_env()
    if settings.database_url and (settings.redis_url or not start_redis):
        return settings, None
    from shared.embedded import EmbeddedServices

    embedded = EmbeddedServices(settings.data_dir).start(with_redis=start_redis and not settings.redis_url)
    return settings.with_urls(settings.database_url or embedded.database_url,
                              settings.redis_url or embedded.redis_url), embedded


class _Group(click.Group):
    """Reports a configuration problem as one line, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (ConfigError, DatabaseUnreachable) as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@connection_options
def main() -> None:
    """Collect Tasks: pausable, resumable, revocable upload and export tasks."""


def _migrate(database_url: str) -> int:
    """Create the database if its server has none of that name yet, then bring its schema up to date."""
    if ensure_database(database_url):
        click.echo(f"created database {without_password(database_url)}", err=True)
    return migrate(database_url)


@main.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date."""
    settings, embedded = _settings_with_database()
    applied = _migrate(settings.database_url)
    click.echo(f"{applied} migration(s) applied")


@main.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.option("--org", "organization", required=True, help="Organization name (created if needed).")
def keys_create(organization: str) -> None:
    """Create an API key for an organization; the key is the last line printed."""
    settings, embedded = _settings_with_database()
    _migrate(settings.database_url)
    click.echo(f"API key for organization {organization!r} (shown once, store it safely):")
    click.echo(_create_key(settings, organization))


def _create_key(settings: Settings, organization: str) -> str:
    from shared import orgs

    db = Database(settings.database_url, maxconn=2)
    try:
        with db.transaction() as cur:
            return orgs.create_api_key(cur, organization)
    finally:
        db.close()


@main.command()
@click.option("--dev-key/--no-dev-key", default=False, help="Print a new API key for the 'development' organization.")
def up(dev_key: bool) -> None:
    """Run the gateway (gunicorn), one worker per service domain and the scheduler, until interrupted."""
    settings, embedded = _settings_with_database(start_redis=True)
    _migrate(settings.database_url)
    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    metrics_dir, environments = metrics_environments(env, settings.worker_metrics_port)
    commands = stack_commands()
    children = [subprocess.Popen(command, env=environment)
                for command, environment in zip(commands, environments, strict=True)]
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _wait_until_ready(settings.port, children)
    click.echo(f"Collect Tasks is running at http://localhost:{settings.port}/ (health: /health/ready)")
    if embedded is not None:
        click.echo(f"Embedded servers (for other commands, e.g. `collect health`): "
                   f"DATABASE_URL='{settings.database_url}' REDIS_URL='{settings.redis_url}'")
    if dev_key:
        click.echo("Development API key (organization 'development'):")
        click.echo(_create_key(settings, "development"))
    exit_code = 0
    restarts: list[list[float]] = [[] for _ in children]
    try:
        while not stopping:
            for index, child in enumerate(children):
                if child.poll() is None:
                    continue
                # A process that died (killed, crashed) is started again: its tasks are taken over from
                # their checkpoints once their lease expires. One that keeps dying stops everything.
                now = time.monotonic()
                restarts[index] = [at for at in restarts[index] if now - at < RESTART_WINDOW_SECONDS] + [now]
                name = os.path.basename(child.args[0])
                if len(restarts[index]) > MAX_RESTARTS:
                    click.echo(f"{name} exited with {child.returncode} {MAX_RESTARTS} times within "
                               f"{RESTART_WINDOW_SECONDS} s; stopping", err=True)
                    stopping, exit_code = True, 1
                    break
                click.echo(f"{name} exited with {child.returncode}; starting it again", err=True)
                children[index] = subprocess.Popen(commands[index], env=environments[index])
            time.sleep(0.5)
    finally:
        _terminate(children)
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    sys.exit(exit_code)


def _terminate(children: list[subprocess.Popen]) -> None:
    """Ask every child still running to stop (SIGTERM); kill those still running 15 s later."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()


def metrics_environments(env: dict[str, str], worker_metrics_port: int) -> tuple[str, list[dict[str, str]]]:
    """A fresh Prometheus multiprocess directory for this run, and the environment of each process `up`
    starts (in its order: gateway, the worker domains, scheduler): the gateway and each worker domain
    count in a directory of their own (an exporter serves its whole directory), and the worker domains'
    exporters listen on `worker_metrics_port` and the next ports (each `dramatiq` command starts one)."""
    from shared.worker_metrics import exporter_environment

    metrics_dir = tempfile.mkdtemp(prefix="collect-metrics-")
    environments = [{**env, "PROMETHEUS_MULTIPROC_DIR": os.path.join(metrics_dir, "gateway")}]
    for service in WORKER_DOMAINS:
        directory = os.path.join(metrics_dir, service.name)
        os.makedirs(directory)
        environments.append({**env, **exporter_environment(directory,
                                                           worker_metrics_port + service.metrics_port_offset)})
    # The scheduler only sends messages: it counts nothing.
    environments.append(dict(env))
    return metrics_dir, environments


@main.command()
@click.argument("service", required=False, type=click.Choice(SERVICE_NAMES))
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for PostgreSQL and Redis.")
def health(service: str | None, timeout: float) -> None:
    """Print a health report (the same JSON as /health/...) and exit 1 when its status is `fail`.

    With no SERVICE: whether PostgreSQL and Redis are reachable (/health/ready). With a SERVICE: whether its
    workers are alive and how its queue is doing (/health/SERVICE). For a container's health check."""
    import json

    from shared import health as reports

    settings = Settings.from_env()
    database_url, redis_url = settings.require_urls()
    if service is None:
        db = Database(database_url, maxconn=1)
        try:
            report = reports.readiness(db, redis_url, timeout)
        finally:
            db.close()
    else:
        report = reports.service_health(redis_url, service, timeout=timeout, namespace=settings.broker_namespace,
                                        queue_age_warn_seconds=settings.queue_age_warn_seconds)
    click.echo(json.dumps(report, indent=2))
    sys.exit(1 if report["status"] == "fail" else 0)


def _wait_until_ready(port: int, children, timeout: float = 60) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            return
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1):
                return
        except OSError:
            time.sleep(0.2)


add_client_commands(main)

if __name__ == "__main__":
    main()
