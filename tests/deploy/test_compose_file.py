"""docker-compose.yml keeps the shape scripts/test-deploy proves and the docs promise.

scripts/test-deploy runs the stack for real (it needs a Docker engine, so it runs in .ci/run, not here);
these checks keep the file's promises that a run with the defaults would not notice breaking.
"""

from __future__ import annotations

from tests.deploy.manifests import ROOT, compose

SERVICES = compose()["services"]
WORKERS = ("upload-worker", "export-worker", "control-worker")


def test_the_stack_has_every_process_each_with_a_health_check_and_restart_policy():
    assert set(SERVICES) == {"postgres", "redis", "migrate", "gateway", *WORKERS, "scheduler"}
    for name, service in SERVICES.items():
        assert service["healthcheck"]["test"], name
        assert service["restart"] in ("unless-stopped", "always", "no"), name
    assert SERVICES["migrate"]["restart"] == "no"


def test_services_start_in_order_migrate_first():
    for name in ("gateway", *WORKERS, "scheduler"):
        conditions = {dependency: spec["condition"] for dependency, spec in SERVICES[name]["depends_on"].items()}
        assert conditions == {"migrate": "service_completed_successfully", "postgres": "service_healthy",
                              "redis": "service_healthy"}, name
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_workers_scale_no_fixed_names_or_host_ports():
    # `docker compose up --scale upload-worker=3` fails on a container_name or a published host port.
    for name, service in SERVICES.items():
        assert "container_name" not in service, name
        if name != "gateway":
            assert "ports" not in service, name


def test_images_and_configuration_are_parameterized_and_no_secret_is_inlined():
    assert SERVICES["postgres"]["image"] == "${POSTGRES_IMAGE:-postgres:17}"
    assert SERVICES["redis"]["image"] == "${REDIS_IMAGE:-redis:7}"
    env_file = "${COLLECT_ENV_FILE:-deploy/collect.env.example}"
    assert (ROOT / "deploy" / "collect.env.example").is_file()
    for name, service in SERVICES.items():
        if name != "redis":
            assert service["env_file"] == env_file, name
        assert "environment" not in service, f"{name}: settings belong in the env file"
    assert "PASSWORD" not in (ROOT / "docker-compose.yml").read_text().replace("POSTGRES_PASSWORD_FILE", "")


def test_the_gateway_takes_every_server_setting_from_its_gunicorn_config():
    assert SERVICES["gateway"]["command"] == ["gunicorn", "--config", "python:services.gateway.gunicorn_config",
                                              "services.gateway.wsgi:app"]
    for worker in WORKERS:
        domain = worker.removesuffix("-worker")
        command = SERVICES[worker]["command"]
        assert command[:2] == ["dramatiq", f"services.{domain}.actors"]
        assert command[command.index("--queues") + 1] == domain
        assert SERVICES[worker]["healthcheck"]["test"][:4] == ["CMD", "collect", "health", domain]


def test_the_gunicorn_config_takes_port_and_workers_from_the_settings(monkeypatch):
    # Given PORT and GATEWAY_WORKERS in the environment (the env file), when gunicorn loads its config,
    # then it binds that port on every interface with that many worker processes.
    import importlib

    from services.gateway import gunicorn_config

    monkeypatch.setenv("PORT", "8123")
    monkeypatch.setenv("GATEWAY_WORKERS", "3")
    try:
        config = importlib.reload(gunicorn_config)
        assert (config.bind, config.workers, config.worker_class) == (
            "0.0.0.0:8123", 3, "services.gateway.worker.HeaderTimeoutWorker")
    finally:
        monkeypatch.undo()
        importlib.reload(gunicorn_config)
