"""Reading an export's pages ahead, several at once, each on a connection of its own.

An export's file is its range's rows in (submitted_at, response_id) order, one page per batch. Where a
page ends is found before it is read: a probe (an index-only scan when the table's visibility map is up
to date) finds the key of the `rows`-th row after the page's start. A page is then a bounded range of
keys, (after, upto], that depends on nothing else. Each reader thread probes for the end of its page as
soon as the page before has been probed, then reads its page, so `parallel` pages are read at once, on as
many cores, while the batch thread stores the oldest one with its checkpoint. A paused or resumed export
probes again from its checkpoint's key and reads the same pages: its file has the same bytes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2

from shared import thread_starts

Key = list[str]  # [submitted_at, response_id] as text, as the checkpoint keeps it
# probe(cursor, after): the key the page starting after `after` ends at, None when it runs to the range's end.
Probe = Callable[[Any, "Key | None"], "Key | None"]
# The start of the page after the range's last one: there is none.
_NO_MORE = object()


@dataclass(frozen=True)
class Bounds:
    """A page: the rows after `after` (None: from the range's start) up to and including `upto` (None:
    to the range's end, the last page)."""

    after: Key | None
    upto: Key | None


@dataclass(frozen=True)
class Page:
    bounds: Bounds
    data: bytes  # the page's CSV records, as COPY ... TO STDOUT wrote them
    rows: int


class _Pending:
    """A page on its way: `end` resolves once its end has been probed, `page` once it has been read."""

    def __init__(self, start: concurrent.futures.Future, statement: str) -> None:
        self.start = start
        self.statement = statement
        self.end: concurrent.futures.Future = concurrent.futures.Future()
        self.page: concurrent.futures.Future | None = None


def _resolved(value) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(value)
    return future


class PageReader:
    """Reads the pages of one export run ahead of the batch thread, on reader connections that `connect()`
    opens (closed by close()); `settings` (SET LOCAL ...) run first in each page's transaction."""

    def __init__(self, connect: Callable[[], Any], parallel: int, settings: str) -> None:
        self._connect = connect
        self._parallel = max(1, parallel)
        self._settings = settings
        self._pending: deque[_Pending] = deque()
        self._after: Key | None = None  # where the first pending page starts
        self._tail: concurrent.futures.Future = _resolved(None)  # where the next page to submit starts
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._busy: set = set()
        self._cancelled: set = set()
        self._opened: list = []
        self._lock = threading.Lock()
        self._closed = False
        self._pool = concurrent.futures.ThreadPoolExecutor(self._parallel, thread_name_prefix="export-page")

    def next(self, after: Key | None, statement: str, probe: Probe,
             params: Callable[[Bounds], dict[str, Any]]) -> Page:
        """The page starting after `after`, read with `statement` (a COPY (SELECT ...) TO STDOUT taking
        params(bounds)). Pages read ahead with another start or statement are dropped and read again."""
        if self._pending and (self._after != after or self._pending[0].statement != statement):
            self._drop_pending()
        if not self._pending:
            self._after, self._tail = after, _resolved(after)
        self._fill(statement, probe, params)
        head = self._pending.popleft()
        self._fill(statement, probe, params)
        while True:
            # Waking up now and then lets an asynchronous exception (a stop request) reach this thread.
            try:
                page = head.page.result(timeout=0.02)
                break
            except concurrent.futures.TimeoutError:
                continue
        self._after = page.bounds.upto
        return page

    def _fill(self, statement: str, probe: Probe, params: Callable[[Bounds], dict[str, Any]]) -> None:
        while len(self._pending) < self._parallel:
            if self._tail.done() and self._tail.exception() is None and self._tail.result() is _NO_MORE:
                return  # the range's last page is on its way
            pending = _Pending(self._tail, statement)
            # The pool may start a thread, and this thread runs an interruptible batch.
            pending.page = thread_starts.submit(self._pool, self._probe_and_read, pending, probe, params)
            self._pending.append(pending)
            self._tail = pending.end

    def _probe_and_read(self, pending: _Pending, probe: Probe, params: Callable[[Bounds], dict[str, Any]]
                        ) -> Page | None:
        try:
            after = pending.start.result()  # the page before has been probed (threads start pages in order)
            if after is _NO_MORE:
                pending.end.set_result(_NO_MORE)
                return None
            conn = self._take()
        except BaseException as exc:
            pending.end.set_exception(exc)
            raise
        try:
            with conn.cursor() as cur:
                try:
                    cur.execute(self._settings)  # the first statement: where a dead connection shows
                    upto = probe(cur, after)
                except BaseException as exc:
                    # The next page waits for this one's end: it must learn that there will be none.
                    pending.end.set_exception(exc)
                    raise
                pending.end.set_result(_NO_MORE if upto is None else upto)
                bounds = Bounds(after, upto)
                buffer = io.BytesIO()
                cur.copy_expert(cur.mogrify(pending.statement, params(bounds)).decode(), buffer)
                return Page(bounds, buffer.getvalue(), cur.rowcount)
        finally:
            self._give_back(conn)

    def _take(self):
        with self._lock:
            if self._closed:
                raise RuntimeError("the page reader is closed")
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
                self._opened.append(conn)
            self._busy.add(conn)
            return conn

    def _give_back(self, conn) -> None:
        with self._lock:
            self._busy.discard(conn)
            cancelled = conn in self._cancelled
        with contextlib.suppress(psycopg2.Error):
            conn.rollback()  # a read-only transaction; one a cancel cut short is ended the same way
            if cancelled:  # a cancel that arrives late must not cut another page short
                conn.close()
        if not conn.closed:
            self._idle.put(conn)

    def _drop_pending(self) -> None:
        """Forget the pages read ahead: cancel those not started, stop those being read, wait for them."""
        for pending in self._pending:
            pending.page.cancel()
            # A page waiting for this one's end stops waiting (unless its reader has just set it).
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                pending.end.set_exception(concurrent.futures.CancelledError())
        with self._lock:
            for conn in self._busy:
                self._cancelled.add(conn)
                with contextlib.suppress(psycopg2.Error):
                    conn.cancel()
        for pending in self._pending:
            with contextlib.suppress(BaseException):
                pending.page.exception()
        self._pending.clear()

    def close(self) -> None:
        """Stop reading, wait for the reader threads and close their connections."""
        self._drop_pending()
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        for conn in self._opened:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        self._opened.clear()
