"""An idle worker picks up a new message (a resumed task's) at once: a message sent wakes it, and it looks at
its queue within WORKER_IDLE_POLL_MS in any case, not after Dramatiq's idle back-off, which grows to the worker
timeout (1 s under the `dramatiq` command)."""

from __future__ import annotations

import functools
import os
import time
import uuid

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from shared.broker import PromptRedisBroker


def _broker(prefix: str, **options) -> PromptRedisBroker:
    return PromptRedisBroker(client=redis.Redis.from_url(os.environ["REDIS_URL"]),
                             namespace=f"{prefix}-{uuid.uuid4().hex[:8]}", **options)


def _forget(broker: PromptRedisBroker) -> None:
    broker.client.delete(*(broker.client.keys(f"{broker.namespace}:*") or [f"{broker.namespace}:none"]))


def arrival_delays(broker: PromptRedisBroker, idle_before: list[float]) -> list[float]:
    """Seconds from sending each message to the actor starting on it, each sent after the worker (the
    `dramatiq` command's worker timeout, 1 s) was idle for the given time."""
    received: list[float] = []

    def note_arrival(sent_at: float) -> None:
        received.append(time.time() - sent_at)

    actor = dramatiq.actor(note_arrival, broker=broker, queue_name="prompt", actor_name="note_arrival")
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=1000)
    worker.start()
    try:
        for idle in idle_before:
            time.sleep(idle)
            actor.send(time.time())
            deadline = time.monotonic() + 5
            count = len(received)
            while len(received) == count and time.monotonic() < deadline:
                time.sleep(0.005)
    finally:
        worker.stop()
    return received


def test_an_idle_worker_fetches_a_new_message_within_the_idle_poll():
    # Given a worker idle long enough for its consumer's back-off to reach the worker timeout (1 s), and
    # messages sent with no wake token (as after a worker died and its messages were put back)
    broker = _broker("prompt", idle_poll_ms=50)
    broker.enqueue = functools.partial(RedisBroker.enqueue, broker)  # Dramatiq's own: no token
    try:
        received = arrival_delays(broker, [2, 2, 2])
    finally:
        _forget(broker)
    # Then each was picked up well within the 300 ms a resume may take (the back-off alone would be
    # 0.5-1 s), with room for a loaded machine
    assert len(received) == 3 and max(received) < 0.3, received


def test_a_message_sent_wakes_an_idle_worker_at_once_however_long_its_poll():
    # Given a worker whose idle consumer looks at its queue only every 500 ms (the longest wait)
    broker = _broker("wake", idle_poll_ms=500)
    try:
        # When messages are sent at different points of the poll interval
        received = arrival_delays(broker, [0.3 + 0.17 * trial for trial in range(5)])
    finally:
        _forget(broker)
    # Then each is fetched at once, not at the next poll (waiting for the poll, all five would come in
    # under 150 ms with a chance of (150/500)^5, a quarter of a percent)
    assert len(received) == 5 and max(received) < 0.15, received


def test_wake_tokens_nobody_takes_neither_pile_up_nor_outlive_a_second():
    broker = _broker("wake")
    try:
        for _ in range(100):
            broker.enqueue(dramatiq.Message(queue_name="nobody", actor_name="a", args=(), kwargs={}, options={}))
        broker.enqueue(dramatiq.Message(queue_name="later", actor_name="a", args=(), kwargs={}, options={}),
                       delay=60_000)
        key = broker.wake_key("nobody")
        assert broker.client.llen(key) == 16
        assert 0 < broker.client.pttl(key) <= 1000
        assert not broker.client.exists(broker.wake_key("later"), broker.wake_key("later.DQ"))
    finally:
        _forget(broker)
