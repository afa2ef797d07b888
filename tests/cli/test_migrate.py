"""`collect migrate` (and so `collect up` and `scripts/run`, which migrate first) against the database a user
names: created when its server has none of that name yet; an unreachable server is one line, exit 1."""

from __future__ import annotations

import os
import socket
import subprocess

import psycopg2
import pytest

from shared.db import drop_database, ensure_database, with_database
from tests.cli.conftest import COLLECT


def _collect(*args: str, database_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([COLLECT, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def missing_database():
    """The URL of a database that does not exist yet on the test server (dropped again afterwards)."""
    test_url = os.environ["DATABASE_URL"]
    name = f"{test_url.rsplit('/', 1)[-1]}_made_by_migrate"
    drop_database(test_url, name)
    yield with_database(test_url, name)
    drop_database(test_url, name)


def test_migrate_creates_the_database_it_names_when_missing_then_finds_it(missing_database):
    # When a user names a database that does not exist yet on a server that answers
    result = _collect("migrate", database_url=missing_database)
    # Then it is created and migrated
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("created database ") and missing_database in result.stderr
    assert result.stdout.strip().endswith("migration(s) applied") and not result.stdout.startswith("0 ")
    with psycopg2.connect(missing_database) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('responses') IS NOT NULL AND to_regclass('tasks') IS NOT NULL")
        assert cur.fetchone()[0]
    conn.close()
    # And the second time there is nothing to create or apply
    again = _collect("migrate", database_url=missing_database)
    assert (again.returncode, again.stderr, again.stdout.strip()) == (0, "", "0 migration(s) applied")
    assert ensure_database(missing_database) is False


def test_an_unreachable_database_server_is_one_line_without_the_password_and_exit_1():
    # Given a URL, with a password, of a port nothing listens on
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://someone:s3cret-pw@127.0.0.1:{port}/collect"
    for command in (["migrate"], ["keys", "create", "--org", "acme"]):
        # When a command that needs the database runs
        result = _collect(*command, database_url=url)
        # Then it says which server could not be reached, in one line, and never shows the password
        assert result.returncode == 1, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: cannot connect to "), result.stderr
        assert f"someone:***@127.0.0.1:{port}/collect" in lines[0] and "s3cret-pw" not in result.stderr
        assert "Connection refused" in lines[0]
