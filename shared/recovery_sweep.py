"""RecoverySweep: a worker that boots asks for a sweep once the tasks it may have held have outlived
their lease.

A worker starting may be one restarting after a crash; rather than wait for the scheduler's next minute,
the sweep (see services/control) hands those tasks to a live worker as soon as their lease has expired.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import Middleware

from shared.broker import schedule_sweep


class RecoverySweep(Middleware):
    def __init__(self, after_seconds: float) -> None:
        self.after_seconds = after_seconds

    def after_worker_boot(self, broker: dramatiq.Broker, worker) -> None:
        schedule_sweep(broker, self.after_seconds)
