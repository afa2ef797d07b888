"""The gateway when PostgreSQL or Redis fails: dead pooled connections are replaced, an unavailable
dependency is a 503 problem with Retry-After within 5 s (never a 500, never a hang), health says which
dependency fails and why without naming hosts, ports or databases, and everything recovers without a
restart. Real gunicorn, against servers these tests start and stop themselves."""

from __future__ import annotations

import json
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import psycopg2
import pytest

from shared.db import Database, recreate_database
from shared.migrate import migrate
from tests.conftest import auth, new_key, wait_for
from tests.faults.conftest import gateway, timed

EXPORT = "/api/export/?from_date=2024-01-01&to_date=2024-01-31"


def secrets_of(url: str) -> list[str]:
    """What the public must never see of a server URL: host (or socket directory), port, database, user."""
    parts = urlsplit(url)
    database = parts.path.lstrip("/")
    # A Redis URL's path is a db number, not a name.
    found = [database if not database.isdigit() else "", *(parse_qs(parts.query).get("host", []))]
    if parts.hostname:
        found.append(parts.hostname)
    if parts.port:
        found.append(f":{parts.port}")
    if parts.username and parts.username != "postgres":  # "postgres" is part of the word "postgresql"
        found.append(parts.username)
    return [secret for secret in found if secret]


def assert_no_secrets(body: bytes, *urls: str) -> None:
    text = body.decode()
    for url in urls:
        for secret in secrets_of(url):
            assert secret not in text, f"{secret!r} leaked in {text}"


def assert_unavailable(response, dependency: str, seconds: float) -> dict:
    status, headers, body = response
    assert status == 503, body
    assert seconds < 5, f"answered after {seconds:.1f}s"
    assert headers["Content-Type"] == "application/problem+json"
    assert int(headers["Retry-After"]) > 0
    problem = json.loads(body)
    assert problem["status"] == 503
    assert problem["dependency"] == dependency
    return problem


@pytest.fixture(scope="module")
def own_database(own_postgres):
    """A migrated database on the tests' own PostgreSQL, and an API key in it."""
    url = recreate_database(own_postgres.server_url, "collect_faults")
    migrate(url)
    from shared import orgs

    db = Database(url, maxconn=1)
    try:
        with db.transaction() as cur:
            key = orgs.create_api_key(cur, "faults")
    finally:
        db.close()
    return url, key


def test_postgresql_down_is_a_503_with_retry_after_and_recovers_without_restart(own_postgres, own_database,
                                                                                 own_valkey):
    database_url, key = own_database
    with gateway(database_url, own_valkey.url) as gw:
        # Given a gateway whose pool holds connections to a running server
        assert gw.request("GET", "/api/tasks/", headers=auth(key))[0] == 200
        # When the server stops
        own_postgres.stop()
        try:
            # Then every request that needs it is a 503 problem with Retry-After, within 5 s
            for method, path in [("GET", "/api/tasks/"), ("POST", EXPORT), ("GET", "/api/tasks/"),
                                 ("POST", f"/api/pause/{uuid.uuid4()}/")]:
                seconds, response = timed(lambda m=method, p=path: gw.request(m, p, headers=auth(key)))
                problem = assert_unavailable(response, "postgresql", seconds)
                print(f"{method} {path} with PostgreSQL down: 503 in {seconds * 1000:.0f} ms")
                assert problem["reason"] == "connection refused"
                assert_no_secrets(response[2], database_url)
            # And readiness fails, naming PostgreSQL and the general reason only
            seconds, (status, _, body) = timed(lambda: gw.request("GET", "/health/ready"))
            assert status == 503 and seconds < 5
            report = json.loads(body)
            assert report["status"] == "fail"
            assert report["checks"]["postgresql:connection"][0]["status"] == "fail"
            assert report["checks"]["postgresql:connection"][0]["output"] == "connection refused"
            assert report["checks"]["redis:connection"][0]["status"] == "pass"
            assert_no_secrets(body, database_url)
            # And liveness does not depend on it
            assert gw.request("GET", "/health/live")[0] == 200
        finally:
            own_postgres.start()
        # When the server is back, the same gateway process serves again
        wait_for(lambda: gw.request("GET", "/api/tasks/", headers=auth(key))[0] == 200, timeout=15, interval=0.2)
        assert gw.request("GET", "/health/ready")[0] == 200
        assert gw.request("POST", EXPORT, headers=auth(key))[0] == 202
        # And the details went to the log only
        assert "PostgreSQL unavailable (connection refused)" in gw.log()
        assert "Traceback" not in gw.log()


def test_redis_down_tasks_are_still_created_and_controlled_and_health_says_why(own_database, own_valkey):
    database_url, key = own_database
    with gateway(database_url, own_valkey.url) as gw:
        assert gw.request("GET", "/health/ready")[0] == 200
        # When Redis stops
        own_valkey.stop()
        try:
            # Then a new task is still accepted: stored in PostgreSQL as queued, within 5 s
            seconds, (status, _, body) = timed(lambda: gw.request("POST", EXPORT, headers=auth(key)))
            assert status == 202, body
            assert seconds < 5
            task = json.loads(body)
            assert task["state"] == "queued"
            # And it is marked for the sweep, which re-sends its message once Redis is back
            with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
                cur.execute("SELECT enqueued_at < now() - interval '1 day' FROM tasks WHERE id = %s",
                            (task["task_id"],))
                assert cur.fetchone()[0] is True
            # And pause, resume and revoke still change its state
            task_url = task["task_id"]
            status, _, body = gw.request("POST", f"/api/pause/{task_url}/", headers=auth(key))
            assert (status, json.loads(body)["state"]) == (200, "paused")
            status, _, body = gw.request("POST", f"/api/resume/{task_url}/", headers=auth(key))
            assert (status, json.loads(body)["state"]) == (202, "queued")
            status, _, body = gw.request("POST", f"/api/revoke/{task_url}/", headers=auth(key))
            assert (status, json.loads(body)["state"]) == (200, "revoked")
            # And health fails, naming Redis and the general reason, never its address
            for path, check in [("/health/ready", "redis:connection"), ("/health/upload", "redis:connection")]:
                seconds, (status, _, body) = timed(lambda p=path: gw.request("GET", p))
                assert status == 503 and seconds < 5, body
                report = json.loads(body)
                assert report["status"] == "fail"
                assert report["checks"][check][0]["output"] == "connection refused"
                assert_no_secrets(body, own_valkey.url, database_url)
        finally:
            own_valkey.start()
        # When Redis is back, health recovers without a restart
        wait_for(lambda: gw.request("GET", "/health/ready")[0] == 200, timeout=15, interval=0.2)
        assert "Redis unavailable (connection refused)" in gw.log()


def test_terminated_backends_of_pooled_connections_are_replaced(rt):
    # Given a gateway whose pool holds several connections (named, so only its backends are terminated)
    key = new_key(rt)
    application = f"collect-faults-{uuid.uuid4().hex[:8]}"
    with gateway(rt.settings.database_url, rt.settings.redis_url, PGAPPNAME=application) as gw:
        def list_tasks(_=None):
            return gw.request("GET", "/api/tasks/", headers=auth(key))[0]

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(list_tasks, range(32))) == {200}
        # When every one of its backends is terminated (a failover, a restart, an idle-connection reaper)
        with rt.db.transaction() as cur:
            cur.execute("SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
                        "WHERE application_name = %s AND datname = current_database()", (application,))
            assert cur.fetchone()["n"] >= 1
        wait_for(lambda: _backends(rt, application) == 0, timeout=5)
        # Then the next requests all succeed, sequential and concurrent
        assert [list_tasks() for _ in range(10)] == [200] * 10
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(list_tasks, range(32))) == {200}
        assert "Traceback" not in gw.log()


def _backends(rt, application: str) -> int:
    with rt.db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = %s", (application,))
        return cur.fetchone()["n"]


def test_servers_that_accept_but_never_answer_are_a_503_within_5s_and_health_says_timeout(rt):
    # Given PostgreSQL and Redis addresses that accept connections and then say nothing (a hung server,
    # a black-holing network): a listening socket that never accepts
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    port = silent.getsockname()[1]
    database_url = f"postgresql://collect:secret@127.0.0.1:{port}/collect_hidden"
    redis_url = f"redis://127.0.0.1:{port}/0"
    try:
        with gateway(database_url, redis_url) as gw:
            # Then an API request is a 503 within 5 s, not a hang
            seconds, response = timed(lambda: gw.request("GET", "/api/tasks/", headers=auth("ck_whatever")))
            problem = assert_unavailable(response, "postgresql", seconds)
            assert problem["reason"] == "timeout"
            assert_no_secrets(response[2], database_url)
            print(f"GET /api/tasks/ with PostgreSQL not answering: 503 in {seconds * 1000:.0f} ms")
            # And readiness fails within 5 s, saying "timeout" for both and nothing of their addresses
            seconds, (status, _, body) = timed(lambda: gw.request("GET", "/health/ready"))
            assert status == 503 and seconds < 5, (status, seconds)
            checks = json.loads(body)["checks"]
            assert checks["postgresql:connection"][0]["output"] == "timeout"
            assert checks["redis:connection"][0]["output"] == "timeout"
            assert_no_secrets(body, database_url, redis_url)
            assert "secret" not in body.decode() and "collect_hidden" not in body.decode()
    finally:
        silent.close()
