"""An idle worker picks up a new message (a resumed task's) within WORKER_IDLE_POLL_MS, not after Dramatiq's
idle back-off, which grows to the worker timeout (1 s under the `dramatiq` command)."""

from __future__ import annotations

import os
import time
import uuid

import dramatiq
import redis

from shared.broker import PromptRedisBroker


def test_an_idle_worker_fetches_a_new_message_within_the_idle_poll():
    # Given a worker with the `dramatiq` command's worker timeout (1 s), idle long enough for its consumer's
    # back-off to reach that timeout, on a broker namespace of its own
    namespace = f"prompt-{uuid.uuid4().hex[:8]}"
    broker = PromptRedisBroker(client=redis.Redis.from_url(os.environ["REDIS_URL"]), namespace=namespace,
                               idle_poll_ms=50)
    received: list[float] = []

    def note_arrival(sent_at: float) -> None:
        received.append(time.time() - sent_at)

    actor = dramatiq.actor(note_arrival, broker=broker, queue_name="prompt", actor_name="note_arrival")
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=1000)
    worker.start()
    try:
        for _ in range(3):
            time.sleep(2)
            # When a message arrives
            actor.send(time.time())
            deadline = time.monotonic() + 5
            count = len(received)
            while len(received) == count and time.monotonic() < deadline:
                time.sleep(0.005)
        # Then each was picked up well within the 300 ms a resume may take (the back-off alone would be
        # 0.5-1 s), with room for a loaded machine
        assert len(received) == 3 and max(received) < 0.3, received
    finally:
        worker.stop()
        broker.client.delete(*(broker.client.keys(f"{namespace}:*") or [f"{namespace}:none"]))


def test_a_message_sent_wakes_an_idle_worker_at_once_however_long_its_poll():
    # Given a worker whose idle consumer looks at its queue only every 500 ms (the longest wait)
    namespace = f"wake-{uuid.uuid4().hex[:8]}"
    broker = PromptRedisBroker(client=redis.Redis.from_url(os.environ["REDIS_URL"]), namespace=namespace,
                               idle_poll_ms=500)
    received: list[float] = []

    def note_arrival(sent_at: float) -> None:
        received.append(time.time() - sent_at)

    actor = dramatiq.actor(note_arrival, broker=broker, queue_name="wake", actor_name="note_arrival")
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=1000)
    worker.start()
    try:
        for trial in range(5):
            time.sleep(0.3 + 0.17 * trial)  # at different points of the poll interval
            # When a message is sent
            actor.send(time.time())
            deadline = time.monotonic() + 5
            count = len(received)
            while len(received) == count and time.monotonic() < deadline:
                time.sleep(0.005)
        # Then each is fetched at once, not at the next poll (waiting for the poll, all five would come in
        # under 150 ms with a chance of (150/500)^5, a quarter of a percent)
        assert len(received) == 5 and max(received) < 0.15, received
    finally:
        worker.stop()
        broker.client.delete(*(broker.client.keys(f"{namespace}:*") or [f"{namespace}:none"]))


def test_wake_tokens_nobody_takes_neither_pile_up_nor_outlive_a_second():
    namespace = f"wake-{uuid.uuid4().hex[:8]}"
    broker = PromptRedisBroker(client=redis.Redis.from_url(os.environ["REDIS_URL"]), namespace=namespace)
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
        broker.client.delete(*(broker.client.keys(f"{namespace}:*") or [f"{namespace}:none"]))
