"""A stop request that comes while a batch starts a thread interrupts the batch, never the new thread (CPython
3.11 lets an asynchronous exception meant for the starting thread land in the one it starts, which then dies
unstarted while the starting thread waits for it forever)."""

from __future__ import annotations

import threading
import time

from shared import thread_starts
from shared.read_ahead import ReadAhead
from shared.stop_requests import StopListener, StopRequested


def test_stop_requests_while_a_batch_starts_threads_interrupt_the_batch_and_never_hang_it():
    # Given a batch that keeps starting threads (a read-ahead, a lane) while it can be interrupted
    listener = StopListener()
    stop_at = time.monotonic() + 3
    started, interrupted = [], []

    def batch() -> None:
        while time.monotonic() < stop_at:
            try:
                with listener.interruptible("task"):
                    while time.monotonic() < stop_at:
                        ReadAhead(iter(()), depth=1).close()
                        thread_starts.start(threading.Thread(target=lambda: None, daemon=True))
                        started.append(1)
            except StopRequested:
                interrupted.append(1)

    runner = threading.Thread(target=batch, daemon=True)
    runner.start()
    # When stop requests for its task keep coming
    while runner.is_alive() and time.monotonic() < stop_at:
        listener.interrupt("task")
        time.sleep(0.0005)
    # Then the batch was interrupted again and again, and never left waiting for a thread that did not start
    runner.join(5)
    assert not runner.is_alive(), "the batch hangs in Thread.start"
    assert len(interrupted) > 10 and len(started) > 10, (len(interrupted), len(started))
