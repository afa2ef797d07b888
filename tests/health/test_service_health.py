"""Per-service health: live workers from their heartbeats, queue depth, and the oldest message's age.

These tests run their own workers on a broker with a namespace of their own, so the session's worker
(and its heartbeat) cannot change what they see."""

from __future__ import annotations

import time
import uuid

import dramatiq
import pytest
import redis
from dramatiq.brokers.redis import RedisBroker

from shared.health import service_health
from shared.heartbeat_middleware import Heartbeat
from tests.conftest import wait_for


@pytest.fixture
def namespace(rt):
    name = f"health-test-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(rt.settings.redis_url)
    for key in client.scan_iter(match=f"{name}:*"):
        client.delete(key)


@pytest.fixture
def new_broker(rt, namespace):
    """Brokers in the test's namespace, beating fast (one broker per worker, as in a worker process)."""
    brokers = []

    def new():
        broker = RedisBroker(url=rt.settings.redis_url, namespace=namespace)
        broker.add_middleware(Heartbeat(interval=0.2, ttl=1))
        brokers.append(broker)
        return broker

    yield new
    for broker in brokers:
        broker.close()


@pytest.fixture
def broker(new_broker):
    return new_broker()


def report(rt, namespace: str, service: str = "export", warn_after: float = 60) -> dict:
    return service_health(rt.settings.redis_url, service, namespace=namespace,
                          queue_age_warn_seconds=warn_after)


def checks(health: dict) -> dict:
    return {name: observations[0] for name, observations in health["checks"].items()}


def test_no_live_worker_fails(rt, namespace):
    health = report(rt, namespace)
    assert health["status"] == "fail"
    assert health["serviceId"] == "export"
    assert checks(health)["workers:alive"]["observedValue"] == 0
    assert checks(health)["workers:alive"]["status"] == "fail"


def test_live_workers_are_counted_per_service_and_leave_when_they_stop(rt, namespace, new_broker):
    # Given two export workers and one control worker
    workers = [dramatiq.Worker(new_broker(), queues={queue}, worker_threads=1)
               for queue in ("export", "export", "control")]
    for worker in workers:
        worker.start()
    try:
        # Then export has two live workers and control one
        health = wait_for(lambda: (h := report(rt, namespace))["status"] == "pass"
                          and checks(h)["workers:alive"]["observedValue"] == 2 and h, timeout=5)
        assert checks(health)["workers:alive"]["status"] == "pass"
        wait_for(lambda: checks(report(rt, namespace, "control"))["workers:alive"]["observedValue"] == 1,
                 timeout=5)
        assert checks(report(rt, namespace, "upload"))["workers:alive"]["observedValue"] == 0
    finally:
        for worker in workers:
            worker.stop()
    # When they stop, they are gone at once (not only when their heartbeat expires)
    assert report(rt, namespace)["status"] == "fail"


def test_a_worker_that_dies_without_stopping_expires(rt, namespace, broker):
    heartbeat = next(m for m in broker.middleware if isinstance(m, Heartbeat))
    worker = dramatiq.Worker(broker, queues={"export"}, worker_threads=1)
    worker.start()
    try:
        wait_for(lambda: report(rt, namespace)["status"] == "pass", timeout=5)
        # When its heartbeat stops (the process hangs or is killed)
        for _, stop, thread in heartbeat._beats.values():
            stop.set()
            thread.join()
        # Then it counts as gone once its key's time-to-live (1 s here) passes
        wait_for(lambda: report(rt, namespace)["status"] == "fail", timeout=5)
    finally:
        worker.stop()


def test_queue_depth_and_an_old_waiting_message_warn(rt, namespace, broker):
    # Given a live export worker, and its queue holding messages: one sent two minutes ago
    # (the queue is never declared on this broker, so the worker has no consumer for it and they wait)
    worker = dramatiq.Worker(broker, queues={"export"}, worker_threads=1)
    worker.start()
    try:
        wait_for(lambda: report(rt, namespace)["status"] == "pass", timeout=5)
        old = int((time.time() - 120) * 1000)
        broker.enqueue(dramatiq.Message(queue_name="export", actor_name="run_export", args=("a",), kwargs={},
                                        options={}, message_timestamp=old))
        broker.enqueue(dramatiq.Message(queue_name="export", actor_name="run_export", args=("b",), kwargs={},
                                        options={}))
        # Then the report counts them, names the oldest's age, and warns past the threshold
        health = report(rt, namespace, warn_after=60)
        assert checks(health)["queue:depth"]["observedValue"] == 2
        age = checks(health)["queue:oldestMessageAge"]
        assert 119 <= age["observedValue"] < 130
        assert age["observedUnit"] == "s"
        assert age["status"] == "warn"
        assert health["status"] == "warn"
        # And a recent backlog alone is fine
        assert report(rt, namespace, warn_after=600)["status"] == "pass"
    finally:
        worker.stop()


def test_unreachable_redis_fails(rt):
    health = service_health("redis://127.0.0.1:1/0", "upload", queue_age_warn_seconds=60, timeout=0.5)
    assert health["status"] == "fail"
    assert checks(health)["redis:connection"]["status"] == "fail"
