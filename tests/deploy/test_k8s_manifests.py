"""The Kubernetes manifests (deploy/k8s/) validate offline and point at things that exist in the app.

Built-in kinds are validated against the API schemas kubernetes-validate bundles; KEDA's kinds are not in
those schemas, so their structure and references are checked here, and their Redis list name against the
key Dramatiq's Redis broker really fills.
"""

from __future__ import annotations

import importlib
import re

import click
import kubernetes_validate
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from services.cli import main as collect_command
from shared.broker import send_task_message
from shared.config import Settings
from tests.deploy.manifests import ENV_EXAMPLE, by_kind, containers, env_file, k8s_documents

# The oldest Kubernetes minor the manifests promise to work on (policy/v1 PDB, autoscaling/v2: 1.23+).
KUBERNETES_VERSION = "1.29"
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
WORKER_DOMAINS = ("upload", "export", "control")

DOCUMENTS = k8s_documents()
DEPLOYMENTS = by_kind(DOCUMENTS, "Deployment")
CONFIG = by_kind(DOCUMENTS, "ConfigMap")["collect-config"]["data"]


def _probes(container: dict) -> dict[str, dict]:
    return {kind: container[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe") if kind in container}


def _id(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize("doc", [d for d in DOCUMENTS if d["kind"] not in KEDA_KINDS], ids=_id)
def test_built_in_kinds_validate_against_the_api_schema(doc):
    # Given a manifest of a kind the Kubernetes API defines, then it validates strictly (no unknown fields).
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_a_deployment_per_service_each_with_probes_resources_and_a_disruption_budget():
    # Given the manifests, then every process has its Deployment, probes, requests and a memory limit,
    # and a PodDisruptionBudget selects its pods.
    expected = {"collect-gateway", "collect-scheduler", *(f"collect-{d}-worker" for d in WORKER_DOMAINS)}
    assert set(DEPLOYMENTS) == expected
    budgets = by_kind(DOCUMENTS, "PodDisruptionBudget").values()
    for name, deployment in DEPLOYMENTS.items():
        (container,) = containers(deployment)
        assert {"livenessProbe", "readinessProbe"} <= set(_probes(container)), name
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert "memory" in container["resources"]["limits"], name
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(budget["spec"]["selector"]["matchLabels"].items() <= labels.items() for budget in budgets), name
    assert by_kind(DOCUMENTS, "Job")["collect-migrate"]["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "collect", "migrate"]


def test_every_http_probe_path_is_served_by_the_app(idle_client):
    # Given the gateway's HTTP probes, then each path is a route of the app that answers 200 when
    # PostgreSQL and Redis are up (a typo would be a 404 and the pod would never become ready).
    (gateway,) = containers(DEPLOYMENTS["collect-gateway"])
    paths = {probe["httpGet"]["path"] for probe in _probes(gateway).values()}
    assert paths == {"/health/live", "/health/ready"}
    for path in paths:
        assert idle_client.simulate_get(path).status_code == 200, path


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_every_exec_probe_is_a_valid_collect_health_command(name):
    # Given a probe that runs a command, then it is `collect health [SERVICE]` with arguments the command
    # accepts, and a worker's probe names the domain whose queue it consumes.
    (container,) = containers(DEPLOYMENTS[name])
    for probe in _probes(container).values():
        if "exec" not in probe:
            continue
        program, *args = probe["exec"]["command"]
        assert program == "collect" and args[0] == "health"
        context = collect_command.make_context("collect", list(args))
        subcommand_name, subcommand, rest = collect_command.resolve_command(context, list(args))
        try:
            subcommand.make_context(subcommand_name, rest, parent=context)
        except click.UsageError as error:
            pytest.fail(f"{name}: `collect {' '.join(args)}`: {error}")
        if name.endswith("-worker"):
            assert args[1] == name.removeprefix("collect-").removesuffix("-worker")


def test_processes_run_modules_that_exist_and_the_gateway_takes_its_gunicorn_config():
    # Given the commands, then every module they name imports, each worker consumes its own domain's queue,
    # and the gateway's server settings come from the one gunicorn config file.
    for name, deployment in DEPLOYMENTS.items():
        (container,) = containers(deployment)
        command = container["command"]
        if command[0] == "gunicorn":
            assert command == ["gunicorn", "--config", "python:services.gateway.gunicorn_config",
                               "services.gateway.wsgi:app"]
            importlib.import_module("services.gateway.gunicorn_config")
        else:
            modules = [arg for arg in command[1:] if arg.startswith("services.")]
            assert modules, name
            for module in modules:
                importlib.import_module(module)
        if command[0] == "dramatiq":
            domain = name.removeprefix("collect-").removesuffix("-worker")
            assert command[command.index("--queues") + 1] == domain


def test_the_ingress_admits_the_largest_upload_and_waits_as_long_as_gunicorn():
    # Given the Ingress, then its body-size limit is at least MAX_UPLOAD_BYTES and its proxy timeouts are
    # at least gunicorn's worker timeout, so that the gateway, not nginx, decides.
    from services.gateway import gunicorn_config

    (ingress,) = by_kind(DOCUMENTS, "Ingress").values()
    annotations = ingress["metadata"]["annotations"]
    size = re.fullmatch(r"(\d+)([kmg]?)", annotations["nginx.ingress.kubernetes.io/proxy-body-size"])
    limit = int(size[1]) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[size[2]]
    assert limit >= int(CONFIG["MAX_UPLOAD_BYTES"])
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= gunicorn_config.timeout
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] in by_kind(DOCUMENTS, "Service")


def test_the_config_map_documents_the_real_defaults():
    # Given the ConfigMap and the Compose env file, then both hold exactly the defaults Settings applies.
    urls = {"DATABASE_URL": "postgresql://x@db/x", "REDIS_URL": "redis://r:6379/0"}
    assert Settings.from_env({**CONFIG, **urls}) == Settings.from_env(urls)
    example = env_file(ENV_EXAMPLE)
    assert Settings.from_env({**example, **urls}) == Settings.from_env(urls)
    assert {key: value for key, value in example.items() if key in CONFIG} == CONFIG


def test_keda_scales_the_upload_and_export_workers_on_their_dramatiq_queue():
    # Given the ScaledObjects, then one targets each of the upload and export Deployments, with a Redis
    # list trigger on that domain's queue key, authenticated from the Secret the pods read.
    scaled = by_kind(DOCUMENTS, "ScaledObject")
    authentications = by_kind(DOCUMENTS, "TriggerAuthentication")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} == {
        "collect-upload-worker", "collect-export-worker"}
    for scaled_object in scaled.values():
        assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaled_object["spec"]
        target = DEPLOYMENTS[spec["scaleTargetRef"]["name"]]
        domain = spec["scaleTargetRef"]["name"].removeprefix("collect-").removesuffix("-worker")
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == f"{CONFIG['BROKER_NAMESPACE']}:{domain}"
        assert int(trigger["metadata"]["listLength"]) >= 1
        authentication = authentications[trigger["authenticationRef"]["name"]]
        (reference,) = authentication["spec"]["secretTargetRef"]
        assert reference["parameter"] == "address"
        secrets = {source["secretRef"]["name"] for source in containers(target)[0]["envFrom"] if "secretRef" in source}
        assert reference["name"] in secrets


def test_the_keda_list_name_is_the_key_dramatiq_queues_messages_in(rt):
    # Given a Redis broker with some namespace, when a task message is sent to the upload queue, then the
    # list `<namespace>:upload` holds it: the key the ScaledObjects watch (namespace from the ConfigMap).
    namespace = "k8s-manifest-test"
    client = redis.Redis.from_url(rt.settings.redis_url)
    client.delete(f"{namespace}:upload", f"{namespace}:upload.msgs")
    broker = RedisBroker(url=rt.settings.redis_url, namespace=namespace)
    try:
        send_task_message(broker, "upload", "run_upload", "00000000-0000-0000-0000-000000000000")
        assert client.type(f"{namespace}:upload") == b"list"
        assert client.llen(f"{namespace}:upload") == 1
    finally:
        client.delete(f"{namespace}:upload", f"{namespace}:upload.msgs")
        broker.close()
