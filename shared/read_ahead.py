"""ReadAhead: produce the next items of an iterator in a background thread while the caller works on the
current one (e.g. parse batch k+1 while batch k is in PostgreSQL; psycopg2 releases the GIL while it
waits on the server, so the two overlap)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

from shared import thread_starts

T = TypeVar("T")
_DONE = object()


class ReadAhead(Generic[T]):
    """At most `depth` items made and not yet taken, the one being made included: memory is bounded by what
    the consumer has not caught up with, not by how far the producer could run ahead (a batch queued and
    the next one half parsed behind it would be two)."""

    def __init__(self, source: Iterator[T], depth: int = 2) -> None:
        self._source = source
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._room = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="read-ahead", daemon=True)
        thread_starts.start(self._thread)  # possibly from a batch a stop request may interrupt

    def _produce(self) -> None:
        try:
            source = iter(self._source)
            while self._wait_for_room():
                item = next(source, _DONE)
                self._queue.put((item, None))
                if item is _DONE:
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._queue.put((_DONE, exc))

    def _wait_for_room(self) -> bool:
        """True once one more item may be made; False once the reader is closed."""
        while not self._stop.is_set():
            if self._room.acquire(timeout=0.1):
                return True
        return False

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        while True:
            # Waking up now and then lets an asynchronous exception (a stop request) reach this thread.
            try:
                item, error = self._queue.get(timeout=0.02)
                break
            except queue.Empty:
                continue
        if error is not None:
            raise error
        if item is _DONE:
            self._queue.put((_DONE, None))
            raise StopIteration
        self._room.release()
        return item

    def close(self) -> None:
        """Stop producing; returns once the background thread has ended."""
        self._stop.set()
        # Its puts never block (the room is counted apart from the queue): it ends at its next wait for room.
        self._thread.join()
