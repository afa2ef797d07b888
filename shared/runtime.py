"""The collaborators of one worker or gateway process, built once from the environment: the settings, the
database pool, and the broker with the middleware every worker runs."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass
from functools import cache

import dramatiq
from dramatiq.middleware import Middleware
from periodiq import PeriodiqMiddleware

from shared.broker import create_broker
from shared.config import Settings
from shared.db import Database
from shared.heartbeat_middleware import Heartbeat
from shared.log_context_middleware import LogContext
from shared.recovery_sweep import RecoverySweep
from shared.stale_messages import SkipStaleMessages
from shared.stop_requests import StopListener
from shared.worker_metrics import WorkerPrometheus


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    db: Database
    broker: dramatiq.Broker


def worker_middleware(db: Database, settings: Settings) -> list[Middleware]:
    """The middleware of every process's broker, in the order Dramatiq runs their hooks."""
    return [
        PeriodiqMiddleware(skip_delay=30),
        StopListener(),
        SkipStaleMessages(db),
        # Once the tasks a crashed predecessor held have outlived their lease.
        RecoverySweep(after_seconds=settings.task_lease_seconds + 1),
        Heartbeat(),
        LogContext(),
        WorkerPrometheus(),
    ]


# How long a thread may hold the GIL while another waits for it (CPython's default is 5 ms). Our processes
# mix threads that compute (CSV parsing, JSON) with threads that mostly wait on PostgreSQL and Redis; each
# time a waiting thread's answer arrives it must get the GIL back, and with the default it queues behind the
# computing threads for up to 5 ms a time, dozens of times for one pause or resume. With four uploads in one
# worker the median pause took 237 ms and a resumed task 553 ms to be picked up; at 0.2 ms, 49 and 123 ms
# (scripts/control_phases.py, docs/performance.md).
SWITCH_INTERVAL_SECONDS = 0.0002

# glibc serves a large allocation with mmap (returned to the system when freed) only above a threshold that
# it raises to the size of each such block freed, up to 32 MiB: after an upload's first batch buffers of a
# few MiB come from the heap and its arenas, where freed ones stay and fragment. A 5M-row upload's worker
# peaked at 104-110 MiB against 87 MiB for 500k rows; with the threshold fixed at 1 MiB, 88 against 81 MiB
# (docs/performance.md). M_MMAP_THRESHOLD is mallopt's parameter -3.
MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold (which also stops it from moving); False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


@cache
def runtime() -> Runtime:
    """This process's runtime; the broker is installed as Dramatiq's global broker."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    fix_mmap_threshold()
    settings = Settings.from_env()
    database_url, redis_url = settings.require_urls()
    db = Database(database_url, maxconn=settings.db_pool_size, connect_timeout=settings.dependency_timeout_seconds)
    broker = create_broker(redis_url, settings.broker_namespace, timeout=settings.dependency_timeout_seconds,
                           idle_poll_ms=settings.worker_idle_poll_ms)
    for middleware in worker_middleware(db, settings):
        broker.add_middleware(middleware)
    dramatiq.set_broker(broker)
    return Runtime(settings=settings, db=db, broker=broker)
