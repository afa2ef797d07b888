"""The /health/ endpoints answer application/health+json, 503 when their status is fail."""

from __future__ import annotations

import dataclasses

from falcon import testing

from services.gateway.app import create_app
from shared.db import Database
from tests.conftest import wait_for

HEALTH_JSON = "application/health+json"


def test_live_checks_nothing_and_passes(client):
    result = client.simulate_get("/health/live")
    assert result.status_code == 200
    assert result.headers["content-type"] == HEALTH_JSON
    assert result.json == {"status": "pass", "description": "process is up"}


def test_ready_passes_when_postgresql_and_redis_answer(client):
    result = client.simulate_get("/health/ready")
    assert result.status_code == 200
    assert result.headers["content-type"] == HEALTH_JSON
    assert result.json["status"] == "pass"
    assert {name: c[0]["status"] for name, c in result.json["checks"].items()} == {
        "postgresql:connection": "pass", "redis:connection": "pass"}


def test_ready_and_services_fail_with_503_when_redis_is_unreachable(rt):
    settings = dataclasses.replace(rt.settings, redis_url="redis://127.0.0.1:1/0")
    client = testing.TestClient(create_app(rt.db, rt.broker, settings))
    for path in ("/health/ready", "/health/upload"):
        result = client.simulate_get(path)
        assert result.status_code == 503, path
        assert result.headers["content-type"] == HEALTH_JSON
        assert result.json["status"] == "fail"
    assert client.simulate_get("/health/live").status_code == 200


def test_ready_fails_with_503_when_postgresql_is_unreachable(rt):
    client = testing.TestClient(create_app(Database("postgresql://postgres@127.0.0.1:1/none"), rt.broker,
                                           rt.settings))
    result = client.simulate_get("/health/ready")
    assert result.status_code == 503
    checks = result.json["checks"]
    assert checks["postgresql:connection"][0]["status"] == "fail"
    assert checks["redis:connection"][0]["status"] == "pass"


def test_a_service_with_a_live_worker_passes(client, worker):
    # The session's worker consumes the upload queue (and beats as soon as it has started).
    result = wait_for(lambda: (r := client.simulate_get("/health/upload")).status_code == 200 and r,
                      timeout=10)
    assert result.headers["content-type"] == HEALTH_JSON
    assert result.json["serviceId"] == "upload"
    assert result.json["status"] in ("pass", "warn")
    assert result.json["checks"]["workers:alive"][0]["observedValue"] >= 1


def test_an_unknown_service_is_a_404_problem(client):
    result = client.simulate_get("/health/mailer")
    assert result.status_code == 404
    assert result.headers["content-type"] == "application/problem+json"
    assert "upload, export, control" in result.json["detail"]
