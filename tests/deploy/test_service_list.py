"""The services are listed once (shared/services.py); what runs them follows that list.

`collect up`, the health and metrics endpoints and the gateway read the list in code; docker-compose.yml
and the Kubernetes manifests are files, so these checks keep them in step with it.
"""

from __future__ import annotations

from services import cli
from shared.services import SERVICE_NAMES, SERVICES, TASK_KINDS
from tests.deploy.manifests import by_kind, compose, containers, k8s_documents


def test_collect_up_runs_one_worker_per_listed_service_and_schedules_their_periodic_actors():
    assert {service.name for service in cli.WORKER_DOMAINS} == set(SERVICE_NAMES)
    assert set(cli.SCHEDULER_MODULES) == {s.actors_module for s in SERVICES if s.periodic}
    # The exporters' ports follow the README: upload, control, export from WORKER_METRICS_PORT on.
    assert [s.name for s in cli.WORKER_DOMAINS] == ["upload", "control", "export"]
    assert [s.metrics_port_offset for s in cli.WORKER_DOMAINS] == [0, 1, 2]
    assert cli.scheduler_command()[3:] == [
        "services.upload.actors", "services.control.actors", "services.export.actors"]


def test_compose_has_a_worker_per_listed_service_running_its_actors_and_the_scheduler_its_periodic_ones():
    services = compose()["services"]
    workers = {name.removesuffix("-worker") for name in services if name.endswith("-worker")}
    assert workers == set(SERVICE_NAMES)
    for service in SERVICES:
        worker = services[f"{service.name}-worker"]
        assert worker["command"] == cli.worker_command(service), service.name
        assert worker["healthcheck"]["test"][:4] == ["CMD", "collect", "health", service.name]
    assert services["scheduler"]["command"] == cli.scheduler_command()


def test_kubernetes_has_a_worker_per_listed_service_running_its_actors_and_the_scheduler_its_periodic_ones():
    deployments = by_kind(k8s_documents(), "Deployment")
    workers = {name.removeprefix("collect-").removesuffix("-worker") for name in deployments
               if name.endswith("-worker")}
    assert workers == set(SERVICE_NAMES)
    for service in SERVICES:
        (container,) = containers(deployments[f"collect-{service.name}-worker"])
        assert container["command"] == cli.worker_command(service), service.name
        assert container["livenessProbe"]["exec"]["command"][:3] == ["collect", "health", service.name]
    (scheduler,) = containers(deployments["collect-scheduler"])
    assert scheduler["command"] == cli.scheduler_command()


def test_the_gateway_reports_the_health_of_the_listed_services_and_filters_by_their_task_kinds(idle_client):
    spec = idle_client.simulate_get("/docs/openapi.json").json
    assert spec["components"]["parameters"]["service"]["schema"]["enum"] == list(SERVICE_NAMES)
    assert spec["components"]["parameters"]["task_kind"]["schema"]["items"]["enum"] == list(TASK_KINDS)
    assert TASK_KINDS == ("upload", "export")
