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
