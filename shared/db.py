"""PostgreSQL access: a thread-safe connection pool and transaction scopes."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg2
import psycopg2.extras
import psycopg2.pool
from psycopg2 import sql

psycopg2.extras.register_uuid()


class DictCursor(psycopg2.extensions.cursor):
    """A cursor whose rows are plain dicts keyed by column name (the last of two same-named columns wins).

    psycopg2's RealDictCursor builds each row with one Python-level __setitem__ per column: for a task's
    25 columns that cost more than the query itself, on the path of every status poll."""

    def _keyed(self, rows: list[tuple]) -> list[dict]:
        names = [column.name for column in self.description]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def fetchone(self) -> dict | None:
        row = super().fetchone()
        return None if row is None else self._keyed([row])[0]

    def fetchmany(self, size: int | None = None) -> list[dict]:
        return self._keyed(super().fetchmany(self.arraysize if size is None else size))

    def fetchall(self) -> list[dict]:
        return self._keyed(super().fetchall())

    def __iter__(self) -> Iterator[dict]:  # the C iterator would bypass fetchone
        return iter(self.fetchall())

# Errors that mean "the server or the connection to it is gone", not "this statement is wrong": the
# gateway answers them 503 (retry later), a worker retries its batch.
UNAVAILABLE_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError, psycopg2.pool.PoolError)


def is_dead(conn: psycopg2.extensions.connection) -> bool:
    """Whether an idle pooled connection can no longer be used: closed on our side, or its server end
    has spoken. An idle connection never receives anything (we LISTEN to nothing), so a readable socket
    means the backend sent its farewell (terminated, server shut down) or the peer closed it. A zero-wait
    poll of the socket: no round trip, unlike a `SELECT 1` ping."""
    if conn.closed:
        return True
    try:
        readable, _, _ = select.select([conn], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class Database:
    """A lazily opened connection pool, reopened after a fork (gunicorn, dramatiq processes).

    Connections are opened with `connect_timeout` (whole seconds, as libpq counts them) and TCP
    keepalives, so neither connecting to a server that does not answer nor waiting on a vanished one
    hangs a thread for long; a pooled connection whose server end is gone is replaced before use."""

    def __init__(self, dsn: str, maxconn: int = 10, connect_timeout: int = 2, connection_factory=None) -> None:
        self.dsn = dsn
        # psycopg2's hook for a connection class of one's own (the tests count statements with it).
        self.connection_factory = connection_factory
        self.maxconn = maxconn
        self.connect_timeout = connect_timeout
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._kept: list[psycopg2.extensions.connection] = []  # given back by borrowers, idle
        self._kept_pid = 0

    def _connect_options(self) -> dict:
        options = {"connect_timeout": self.connect_timeout, "keepalives": 1, "keepalives_idle": 10,
                   "keepalives_interval": 5, "keepalives_count": 2,
                   # Uploads are fed to COPY as UTF-8 bytes and text is read back as UTF-8, whatever the
                   # server's default, the locale or PGCLIENTENCODING say.
                   "client_encoding": "UTF8"}
        if self.connection_factory is not None:
            options["connection_factory"] = self.connection_factory
        return options

    @contextmanager
    def dedicated_connection(self) -> Iterator[psycopg2.extensions.connection]:
        """A connection of its own, outside the pool, closed when the block ends: for LISTEN, which must
        never leave a pooled connection receiving notifications (is_dead relies on idle pooled connections
        receiving nothing). Raises one of UNAVAILABLE_ERRORS when the server cannot be reached."""
        conn = self.connect()
        try:
            yield conn
        finally:
            conn.close()

    def connect(self) -> psycopg2.extensions.connection:
        """A new connection outside the pool, with the pool's options; the caller closes it."""
        return psycopg2.connect(self.dsn, **self._connect_options())

    def borrow(self) -> psycopg2.extensions.connection:
        """A connection outside the pool, for a thread that runs transactions of its own on it (a pipelined
        batch's lane): one given back earlier and still connected, or a new one. A task resumed on this
        worker then starts without waiting for a new backend. Give it back with give_back(), or close it."""
        while True:
            with self._lock:
                if self._kept_pid != os.getpid():  # after a fork: the parent's connections are not ours
                    self._kept, self._kept_pid = [], os.getpid()
                conn = self._kept.pop() if self._kept else None
            if conn is None:
                return self.connect()
            if not is_dead(conn):
                return conn
            conn.close()

    def give_back(self, conn: psycopg2.extensions.connection) -> None:
        """Keep a borrowed connection for the next borrower, if it is idle and fewer than `maxconn` are kept;
        close it otherwise."""
        if not conn.closed and conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            with self._lock:
                if self._kept_pid == os.getpid() and len(self._kept) < self.maxconn:
                    self._kept.append(conn)
                    return
        conn.close()

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        if self._pool is None or self._pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pid != os.getpid():
                    # minconn 0: creating the pool never connects, so a server that is down when the
                    # first request comes is met (and reported) like one that goes down later.
                    pool = psycopg2.pool.ThreadedConnectionPool(0, self.maxconn, self.dsn, **self._connect_options())
                    # psycopg2 keeps at most `minconn` returned connections and closes the rest; raised
                    # after construction (which opens `minconn` at once), every connection is kept idle
                    # for reuse instead of a new connection per transaction.
                    pool.minconn = self.maxconn
                    self._pool = pool
                    self._pid = os.getpid()
        return self._pool

    def _live_connection(self, pool: psycopg2.pool.ThreadedConnectionPool) -> psycopg2.extensions.connection:
        """A pooled connection that is still connected: dead ones (their backend was terminated, the
        server restarted) are closed and replaced. Bounded: at most `maxconn` dead ones can be pooled."""
        for _ in range(self.maxconn + 1):
            conn = pool.getconn()
            if not is_dead(conn):
                return conn
            pool.putconn(conn, close=True)
        return pool.getconn()

    @contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        """A pooled connection; whatever it leaves uncommitted is rolled back. Raises one of
        UNAVAILABLE_ERRORS when the server cannot be reached."""
        pool = self._get_pool()
        conn = self._live_connection(pool)
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
    def transaction(self) -> Iterator[DictCursor]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self.connection() as conn, transaction_on(conn) as cur:
            yield cur

    @contextmanager
    def reading(self) -> Iterator[DictCursor]:
        """A cursor for reads that need no transaction around them: each statement runs on its own
        (autocommit), so a one-statement read costs one round trip instead of BEGIN, the read and COMMIT.
        Statements in the block do not share a snapshot: use transaction() for reads that must agree."""
        with self.connection() as conn:
            conn.autocommit = True
            try:
                with conn.cursor(cursor_factory=DictCursor) as cur:
                    yield cur
            finally:
                if not conn.closed:
                    with suppress(psycopg2.Error):
                        conn.autocommit = False

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.closeall()
        self._pool = None
        with self._lock:
            kept, self._kept = (self._kept if self._kept_pid == os.getpid() else []), []
        for conn in kept:
            conn.close()


@contextmanager
def transaction_on(conn: psycopg2.extensions.connection) -> Iterator[DictCursor]:
    """One transaction on `conn` (pooled or not): committed when the block ends, rolled back if it raises."""
    with conn.cursor(cursor_factory=DictCursor) as cur:
        try:
            yield cur
        except BaseException:
            if not conn.closed:
                try:
                    conn.rollback()
                except psycopg2.Error:
                    # The connection died with the statement: the original error says why, not
                    # "connection already closed"; its owner (the pool) discards the connection.
                    pass
            raise
        conn.commit()


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


class DatabaseUnreachable(Exception):
    """The database a URL names cannot be connected to (the message says why, the URL without its password)."""


def without_password(url: str) -> str:
    """The URL as it may be shown: its password, if any, replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def ensure_database(url: str, connect_timeout: int = 5) -> bool:
    """Create the database `url` names when its server answers but has no database of that name yet; whether
    it was created. Raises DatabaseUnreachable when the server cannot be reached, the database exists but
    refuses the connection, or it cannot be created (no CREATEDB privilege, say)."""
    name = unquote(urlsplit(url).path.lstrip("/"))
    try:
        psycopg2.connect(url, connect_timeout=connect_timeout).close()
        return False
    except psycopg2.OperationalError as exc:
        unreachable = DatabaseUnreachable(f"cannot connect to {without_password(url)}: {_first_line(exc)}")
    # Whether the database is what is missing is asked of the server's maintenance database, which every
    # PostgreSQL server has (the error's wording follows the server's language).
    try:
        conn = psycopg2.connect(with_database(url, "postgres"), connect_timeout=connect_timeout)
    except psycopg2.OperationalError:
        raise unreachable from None
    conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if not name or cur.fetchone() is not None:
                raise unreachable  # it exists: the connection failed for another reason
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg2.errors.DuplicateDatabase:
        return False  # another process created it meanwhile
    except psycopg2.Error as exc:
        raise DatabaseUnreachable(f"database {name!r} does not exist on {without_password(url)} and could not "
                                  f"be created: {_first_line(exc)}") from None
    finally:
        conn.close()
    return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
