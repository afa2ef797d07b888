"""The messages the control core sends by name (the broker itself is built in shared.runtime).

Messages are addressed by queue and actor name (both stored on the task), so the control service can
wake an upload or export worker without importing that service's code.
"""

from __future__ import annotations

import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.errors import ConnectionClosed
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from shared.services import CONTROL

CONTROL_QUEUE = CONTROL.queue
EXPIRE_PAUSE_ACTOR = "expire_pause"
SWEEP_ACTOR = "sweep"


class PromptRedisBroker(RedisBroker):
    """A RedisBroker whose idle consumers are woken by a message sent to their queue, and look at it at least
    every `idle_poll_ms` milliseconds all the same.

    Dramatiq's Redis consumer sleeps, backing off exponentially while its queue is empty, up to the worker
    timeout (1 s under the `dramatiq` command): a task resumed while its worker was idle waited up to that
    long before its message was fetched, and half the poll interval on average with a short poll. Here an
    idle consumer waits on a wake list of its queue (BLPOP) instead of sleeping, and every message sent
    without a delay pushes a token there: one waiting consumer of that queue fetches at once. The poll stays
    for what no token announces (messages put back after a worker died, a full consumer's next fetch)."""

    def __init__(self, *args, idle_poll_ms: int = 50, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.idle_poll_ms = idle_poll_ms

    @property
    def consumer_class(self):
        return _WakeableConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000):
        # The base consumer's own back-off sleep is cut to 1 ms: _WakeableConsumer does the waiting.
        return super().consume(queue_name, prefetch, 1)

    def enqueue(self, message: dramatiq.Message, *, delay: int | None = None) -> dramatiq.Message:
        message = super().enqueue(message, delay=delay)
        if delay is None:
            key = self.wake_key(message.queue_name)
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    # Tokens nobody takes (no consumer waiting) must not pile up: a few, for a second.
                    pipe.lpush(key, 1).ltrim(key, 0, _WAKE_TOKENS - 1).pexpire(key, 1000).execute()
            except redis.RedisError:
                pass  # the message is sent: a consumer's poll finds it without the token
        return message

    def wake_key(self, queue_name: str) -> str:
        return f"{self.namespace}:{queue_name}.wake"


_WAKE_TOKENS = 16
# A wait on the wake list is cut into waits of at most this long, shorter than the client's socket timeout
# (DEPENDENCY_TIMEOUT_SECONDS, at least 1 s), which a longer blocking command would run into.
_LONGEST_WAIT_SECONDS = 0.5


class _WakeableConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer (its fetching and acknowledging unchanged), waiting between empty fetches on
    its queue's wake list for up to the broker's idle_poll_ms instead of sleeping."""

    def __init__(self, broker, queue_name, prefetch, timeout) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)
        self._idle_seconds = min(broker.idle_poll_ms / 1000, _LONGEST_WAIT_SECONDS)
        # A delay queue's messages are fetched ahead of their time and held by the worker: nothing to wake.
        self._wake_key = None if queue_name.endswith(".DQ") else broker.wake_key(queue_name)

    def __next__(self):
        message = super().__next__()
        if message is None:
            self._wait()
        return message

    def _wait(self) -> None:
        if self._wake_key is None or self.outstanding_message_count >= self.prefetch:
            # Full (or a delay queue): a token taken here would be one another consumer could have used.
            time.sleep(self._idle_seconds)
            return
        try:
            self.broker.client.blpop([self._wake_key], timeout=self._idle_seconds)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None


def create_broker(redis_url: str, namespace: str = "dramatiq", timeout: float | None = None,
                  idle_poll_ms: int = 50) -> RedisBroker:
    """A Redis broker with Dramatiq's default middleware only (shared.runtime adds ours). With `timeout`,
    connecting to Redis and each command give up after that many seconds (redis.TimeoutError) instead of
    waiting on a server that does not answer. Idle consumers poll every `idle_poll_ms` at most
    (PromptRedisBroker)."""
    # One retry (redis-py's default is three): a blip is absorbed, and an unanswering Redis costs at most
    # two timeouts, so a gateway request that sends a message still answers within seconds.
    client = redis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                  retry=Retry(ExponentialWithJitterBackoff(), 1))
    return PromptRedisBroker(client=client, namespace=namespace, idle_poll_ms=idle_poll_ms)


def send_task_message(broker: dramatiq.Broker, queue_name: str, actor_name: str, task_id) -> None:
    """Ask the task's service to act on it (run, continue from its checkpoint, or roll back)."""
    broker.enqueue(dramatiq.Message(queue_name=queue_name, actor_name=actor_name, args=(str(task_id),),
                                    kwargs={}, options={}))


def schedule_sweep(broker: dramatiq.Broker, delay_seconds: float) -> None:
    """Have the control service sweep (expire pauses, recover stalled tasks) in `delay_seconds`."""
    message = dramatiq.Message(queue_name=CONTROL_QUEUE, actor_name=SWEEP_ACTOR, args=(), kwargs={}, options={})
    broker.enqueue(message, delay=int(delay_seconds * 1000))


def schedule_pause_expiry(broker: dramatiq.Broker, task_id, delay_seconds: float) -> None:
    """Wake the control service when a pause should expire (the periodic sweep is the safety net)."""
    message = dramatiq.Message(queue_name=CONTROL_QUEUE, actor_name=EXPIRE_PAUSE_ACTOR,
                               args=(str(task_id),), kwargs={}, options={})
    broker.enqueue(message, delay=int(delay_seconds * 1000) + 250)
