"""Heartbeat: every worker says, every few seconds, that it is alive and which queues it consumes.

Each worker writes one Redis key, `<broker namespace>:collect.heartbeat.<worker id>` (beside Dramatiq's
own keys), holding its queues, and renews it every HEARTBEAT_SECONDS with a time-to-live of a few
beats: a worker that dies or hangs simply disappears. shared.health reads these keys to count a
service's live workers.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid

import dramatiq
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)

KEY_PREFIX = "collect.heartbeat."
HEARTBEAT_SECONDS = 5
# Three missed beats and the worker counts as gone.
HEARTBEAT_TTL_SECONDS = 3 * HEARTBEAT_SECONDS


def heartbeat_key(namespace: str, worker_id: str) -> str:
    return f"{namespace}:{KEY_PREFIX}{worker_id}"


def consumed_queues(broker: dramatiq.Broker, worker: dramatiq.Worker) -> list[str]:
    """The worker's queues by their canonical names (without Dramatiq's delay/dead-letter suffixes)."""
    from dramatiq.common import q_name

    names = worker.consumer_whitelist or broker.get_declared_queues()
    return sorted({q_name(name) for name in names if not name.endswith(".XQ")})


class Heartbeat(Middleware):
    def __init__(self, interval: float = HEARTBEAT_SECONDS, ttl: float = HEARTBEAT_TTL_SECONDS) -> None:
        self.interval = interval
        self.ttl = ttl
        # One beating thread per worker (a process normally runs one; tests may run several).
        self._beats: dict[int, tuple[str, threading.Event, threading.Thread]] = {}

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        beat = {"worker_id": worker_id, "pid": os.getpid(), "host": socket.gethostname(),
                "started_at": time.time()}
        key, stop = heartbeat_key(broker.namespace, worker_id), threading.Event()
        thread = threading.Thread(target=self._beat, args=(broker, worker, key, beat, stop), name="heartbeat",
                                  daemon=True)
        self._beats[id(worker)] = (key, stop, thread)
        thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        key, stop, thread = self._beats.pop(id(worker), (None, None, None))
        if key is None:
            return
        stop.set()
        thread.join(timeout=self.interval + 1)
        try:
            broker.client.delete(key)
        except Exception:  # the key expires anyway
            logger.warning("could not remove heartbeat %s", key, exc_info=True)

    def _beat(self, broker, worker, key: str, beat: dict, stop: threading.Event) -> None:
        while not stop.is_set():
            # Queues declared after boot are consumed too (unless the worker was given a list).
            beat = {**beat, "queues": consumed_queues(broker, worker), "beat_at": time.time()}
            try:
                broker.client.set(key, json.dumps(beat), px=int(self.ttl * 1000))
            except Exception:  # Redis away for a moment: the next beat tries again
                logger.warning("heartbeat to Redis failed", exc_info=True)
            stop.wait(self.interval)
