"""Reading an export's pages ahead, several at once, each on a connection of its own.

An export's file is its range's rows in (submitted_at, response_id) order, one page per batch. Where a
page ends is found before it is read: a probe (an index-only scan when the table's visibility map is up
to date) finds the key of the `rows`-th row after the page's start. A page is then a bounded range of
keys, (after, upto], that depends on nothing else, so `parallel` pages are read at once, on as many
cores, while the batch thread stores the oldest one with its checkpoint. A paused or resumed export
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

Key = list[str]  # [submitted_at, response_id] as text, as the checkpoint keeps it


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
    def __init__(self, bounds: Bounds, statement: str, future: concurrent.futures.Future) -> None:
        self.bounds, self.statement, self.future = bounds, statement, future


class PageReader:
    """Reads pages of one export run ahead of the batch thread. `probe(after)` gives the key a page
    starting after `after` ends at (None when the range holds no more than a page after it); `params(bounds)`
    the parameters of a page's statement. `connect()` opens a reader connection (closed by close())."""

    def __init__(self, connect: Callable[[], Any], parallel: int, settings: str) -> None:
        self._connect = connect
        self._parallel = max(1, parallel)
        self._settings = settings  # run before each page, in its transaction (SET LOCAL ...)
        self._pending: deque[_Pending] = deque()
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._busy: set = set()
        self._cancelled: set = set()
        self._opened: list = []
        self._lock = threading.Lock()
        self._closed = False
        self._pool = concurrent.futures.ThreadPoolExecutor(self._parallel, thread_name_prefix="export-page")

    def next(self, after: Key | None, statement: str, probe: Callable[[Key | None], Key | None],
             params: Callable[[Bounds], dict[str, Any]]) -> Page:
        """The page starting after `after`, read with `statement` (a COPY (SELECT ...) TO STDOUT taking
        params(bounds)). Pages read ahead with another start or statement are dropped and read again."""
        if self._pending and (self._pending[0].bounds.after != after or self._pending[0].statement != statement):
            self._drop_pending()
        self._fill(after, statement, probe, params)
        head = self._pending.popleft()
        self._fill(after, statement, probe, params)
        while True:
            # Waking up now and then lets an asynchronous exception (a stop request) reach this thread.
            try:
                data, rows = head.future.result(timeout=0.02)
                return Page(head.bounds, data, rows)
            except concurrent.futures.TimeoutError:
                continue

    def _fill(self, after, statement, probe, params) -> None:
        last = self._pending[-1].bounds if self._pending else None
        while len(self._pending) < self._parallel:
            if last is not None and last.upto is None:
                return  # the range's last page is on its way
            start = after if last is None else last.upto
            last = Bounds(start, probe(start))
            future = self._pool.submit(self._read, statement, params(last))
            self._pending.append(_Pending(last, statement, future))

    def _read(self, statement: str, params: dict[str, Any]) -> tuple[bytes, int]:
        conn = self._take()
        try:
            with conn.cursor() as cur:
                cur.execute(self._settings)
                buffer = io.BytesIO()
                cur.copy_expert(cur.mogrify(statement, params).decode(), buffer)
                return buffer.getvalue(), cur.rowcount
        finally:
            with self._lock:
                self._busy.discard(conn)
                cancelled = conn in self._cancelled
            with contextlib.suppress(psycopg2.Error):
                conn.rollback()  # a read-only transaction; one a cancel cut short is ended the same way
                if cancelled:  # a cancel that arrives late must not cut another page short
                    conn.close()
            if not conn.closed:
                self._idle.put(conn)

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

    def _drop_pending(self) -> None:
        """Forget the pages read ahead: cancel those not started, stop those being read, wait for them."""
        for pending in self._pending:
            pending.future.cancel()
        with self._lock:
            for conn in self._busy:
                self._cancelled.add(conn)
                with contextlib.suppress(psycopg2.Error):
                    conn.cancel()
        for pending in self._pending:
            with contextlib.suppress(BaseException):
                pending.future.exception()
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
