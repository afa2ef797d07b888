"""Transient database errors: the ones that go away by themselves (a lost or killed connection, a server
restart, a serialization failure, a deadlock), told apart from errors that retrying cannot fix.

A transaction that fails this way left nothing behind (PostgreSQL rolled it back), so the work can simply be
done again; the pool discards the broken connection, so the next attempt gets a fresh one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg2
import psycopg2.errors

logger = logging.getLogger(__name__)
T = TypeVar("T")

# 40001 and 40P01: PostgreSQL aborted the transaction to let another one through; doing it again succeeds.
_RETRYABLE_SQL_ERRORS = (psycopg2.errors.SerializationFailure, psycopg2.errors.DeadlockDetected)


def root_cause(exc: BaseException) -> BaseException:
    """The error that started it: rolling back on a dead connection raises "connection already closed",
    which hides the lost connection that the statement before it met."""
    cause = exc
    while isinstance(cause, psycopg2.InterfaceError) and isinstance(cause.__context__, psycopg2.Error):
        cause = cause.__context__
    return cause


def is_transient(exc: BaseException) -> bool:
    """True for errors a new attempt on a new connection can get past. A cancelled statement is not one:
    that is a stop request (or a timeout) and means what it says."""
    if isinstance(exc, psycopg2.errors.QueryCanceled):
        return False
    if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError, *_RETRYABLE_SQL_ERRORS)):
        return True
    # A connection lost in the middle of a COPY surfaces as a bare DatabaseError with no SQLSTATE.
    return type(exc) is psycopg2.DatabaseError and exc.pgcode is None


def describe(exc: BaseException) -> str:
    """One line naming the real cause, e.g. `AdminShutdown: terminating connection due to administrator
    command`."""
    cause = root_cause(exc)
    message = " ".join(str(cause).split()) or "no message"
    return f"{type(cause).__name__}: {message}"


def with_retries(operation: Callable[[], T], attempts: int = 3, delay: float = 0.1) -> T:
    """Run `operation` (one or more whole transactions, safe to repeat) again after a transient error, up to
    `attempts` times in all: a pool's stale connections fail once each and are replaced (so a pool of n
    connections needs n + 1 attempts to be sure of a live one)."""
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            logger.warning("transient database error (%s); attempt %d of %d", describe(exc), attempt, attempts)
            time.sleep(delay)
    raise AssertionError("unreachable")


class Backoff:
    """Delays between retries of one piece of work, doubling up to a ceiling, given up after `give_up_after`
    seconds of consecutive failures (a success starts the clock again)."""

    def __init__(self, give_up_after: float, first: float = 0.1, ceiling: float = 5.0) -> None:
        self.give_up_after = give_up_after
        self.first = first
        self.ceiling = ceiling
        self.reset()

    def reset(self) -> None:
        self._since: float | None = None
        self._next = self.first

    def wait(self) -> bool:
        """Sleep before the next attempt; False (without sleeping) once failures have lasted too long."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
        remaining = self.give_up_after - (now - self._since)
        if remaining <= 0:
            return False
        time.sleep(min(self._next, remaining))
        self._next = min(self._next * 2, self.ceiling)
        return True
