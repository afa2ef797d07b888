"""The connection pool speaks UTF-8 to PostgreSQL whatever the client's environment says."""

from __future__ import annotations

from shared.db import Database


def test_connections_speak_utf8_even_when_the_environment_asks_for_another_encoding(rt, monkeypatch):
    # Given an environment whose libpq default would be LATIN1
    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    db = Database(rt.settings.database_url, maxconn=2)
    try:
        # When a connection is taken from the pool
        with db.transaction() as cur:
            cur.execute("SHOW client_encoding")
            encoding = cur.fetchone()["client_encoding"]
            # Then it is UTF-8, so an upload's UTF-8 bytes reach COPY as they are
            cur.execute("SELECT %s AS text", ("Grüße, नमस्ते, 你好",))
            text = cur.fetchone()["text"]
    finally:
        db.close()
    assert encoding == "UTF8"
    assert text == "Grüße, नमस्ते, 你好"


def test_reading_runs_each_statement_without_a_transaction_and_gives_the_connection_back_as_it_was(rt):
    import psycopg2.extensions as ext

    db = Database(rt.db.dsn, maxconn=1)  # one connection: the transaction below gets the same one back
    try:
        with db.reading() as cur:
            cur.execute("SELECT 1 AS one")
            assert cur.fetchone()["one"] == 1
            # No BEGIN was sent: the statement ran (and ended) on its own, one round trip
            assert cur.connection.get_transaction_status() == ext.TRANSACTION_STATUS_IDLE
            reader = cur.connection
        with db.transaction() as cur:
            assert cur.connection is reader and not reader.autocommit
            cur.execute("SELECT 1")
            assert cur.connection.get_transaction_status() == ext.TRANSACTION_STATUS_INTRANS
    finally:
        db.close()


def test_reading_a_task_costs_the_gateway_two_statements_outside_any_transaction(rt):
    from tests.conftest import auth, new_key
    from tests.shared.test_task_waiting import CountingConnection, counted_gateway, running_task

    key = new_key(rt)
    task, _ = running_task(rt, key)
    counted, client = counted_gateway(rt)
    try:
        assert client.simulate_get(f"/api/tasks/{task.id}/", headers=auth(key)).json["state"] == "running"
    finally:
        counted.close()
    # The key's check and the task's read: each a statement of its own, with no BEGIN or COMMIT around it
    assert len(CountingConnection.statements) == 2
    assert CountingConnection.in_autocommit == [True, True]


def test_rows_are_dicts_keyed_by_column_name_however_they_are_fetched(rt):
    statement = "SELECT n, n * 2 AS double FROM generate_series(1, 3) AS n ORDER BY n"
    expected = [{"n": n, "double": n * 2} for n in (1, 2, 3)]
    with rt.db.reading() as cur:
        cur.execute(statement)
        assert cur.fetchone() == expected[0]
        assert cur.fetchmany(1) == expected[1:2]
        assert cur.fetchall() == expected[2:]
        assert cur.fetchone() is None
        cur.execute(statement)
        assert list(cur) == expected
    with rt.db.transaction() as cur:
        cur.execute(statement)
        assert [type(row) for row in cur.fetchall()] == [dict] * 3
