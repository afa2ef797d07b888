"""PostgreSQL access: a thread-safe connection pool and transaction scopes."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extras
import psycopg2.pool
from psycopg2 import sql

psycopg2.extras.register_uuid()


class Database:
    """A lazily opened connection pool, reopened after a fork (gunicorn, dramatiq processes)."""

    def __init__(self, dsn: str, maxconn: int = 10) -> None:
        self.dsn = dsn
        self.maxconn = maxconn
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        if self._pool is None or self._pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pid != os.getpid():
                    self._pool = psycopg2.pool.ThreadedConnectionPool(1, self.maxconn, self.dsn)
                    self._pid = os.getpid()
        return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        """A pooled connection; whatever it leaves uncommitted is rolled back."""
        pool = self._get_pool()
        conn = pool.getconn()
        broken = False
        try:
            yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        finally:
            if not broken and not conn.closed:
                try:
                    conn.rollback()
                except psycopg2.Error:
                    broken = True
            pool.putconn(conn, close=broken or bool(conn.closed))

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.connection() as conn:
            with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                try:
                    yield cur
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.closeall()
        self._pool = None


def with_database(url: str, name: str) -> str:
    """`url` with its database name replaced by `name`."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _run_outside_transaction(server_url: str, statement: sql.Composable) -> None:
    conn = psycopg2.connect(server_url)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name` (closing its connections) on the server `server_url` points at."""
    statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    _run_outside_transaction(server_url, statement)


def recreate_database(server_url: str, name: str) -> str:
    """Drop and create database `name` on the server `server_url` points at (for tests and benchmarks,
    never for the database `server_url` names itself); returns its URL."""
    drop_database(server_url, name)
    _run_outside_transaction(server_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)
