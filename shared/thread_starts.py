"""Starting threads safely in a process that interrupts threads with asynchronous exceptions.

Until a new thread runs, CPython 3.11 gives it the identity of the thread that started it
(`PyThreadState_SetAsyncExc` matches thread states by identity, and the new state is first in the list). An
asynchronous exception sent then to the starting thread (a stop request for the batch it runs: see
shared.stop_requests) lands in the new thread instead: it dies before it has started, and the starting
thread waits for it forever in `Thread.start`. So asynchronous exceptions are raised only under THREAD_STARTS,
and threads that may be started by a thread that can be interrupted are started under it too.
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor, Future

THREAD_STARTS = threading.Lock()


def start(thread: threading.Thread) -> threading.Thread:
    """Start the thread with no asynchronous exception raised in this process meanwhile."""
    with THREAD_STARTS:
        thread.start()
    return thread


def submit(pool: Executor, fn, /, *args, **kwargs) -> Future:
    """`pool.submit(fn, ...)`, which may start one of the pool's threads, with no asynchronous exception raised
    in this process meanwhile."""
    with THREAD_STARTS:
        return pool.submit(fn, *args, **kwargs)
