"""The task metrics that /metrics reads from PostgreSQL and Redis at scrape time (shared.metrics.TaskCollector),
against the real servers, through the in-process gateway."""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest
from dramatiq.brokers.redis import RedisBroker
from falcon import testing
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.app import create_app
from services.upload.sample_data import csv_bytes
from shared import tasks as t
from tests.conftest import new_key, upload
from tests.export.conftest import export_csv, rows_of, upload_responses


def samples(client) -> dict[tuple[str, frozenset], float]:
    result = client.simulate_get("/metrics")
    assert result.status_code == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(result.text) for s in family.samples}


def value(scraped: dict, name: str, **labels: str) -> float:
    """The sample's value; 0 when there is none (nothing of that kind was counted yet)."""
    return scraped.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def queued_client(rt):
    """The gateway with a broker namespace of its own that no worker consumes: its messages wait."""
    broker = RedisBroker(url=rt.settings.redis_url, namespace=f"waiting-{uuid.uuid4().hex[:8]}")
    return testing.TestClient(create_app(rt.db, broker, rt.settings))


@pytest.fixture
def upload_task(rt, queued_client):
    """A queued upload whose message waits; deleted afterwards, so that no live worker ever picks it up."""
    result = upload(queued_client, new_key(rt), csv_bytes(10))
    assert result.status_code == 202
    task_id = uuid.UUID(result.json["task_id"])
    yield task_id
    with rt.db.transaction() as cur:
        cur.execute("DELETE FROM tasks WHERE id = %s", (task_id,))


def test_a_waiting_message_shows_in_queue_depth_and_age(queued_client, upload_task):
    # Given an upload whose message no worker has taken
    time.sleep(0.3)
    # Then its queue has one message that has waited a little, and the other queues none
    scraped = samples(queued_client)
    assert value(scraped, "collect_queue_depth", queue="upload") == 1
    assert value(scraped, "collect_queue_oldest_message_age_seconds", queue="upload") >= 0.3
    assert value(scraped, "collect_queue_depth", queue="export") == 0
    assert value(scraped, "collect_queue_oldest_message_age_seconds", queue="export") == 0
    assert value(scraped, "collect_metrics_source_up", source="redis") == 1


def test_a_task_stuck_pausing_shows_its_age_and_state(rt, queued_client, upload_task):
    before = samples(queued_client)
    # Given a task that a worker took and was asked to pause, and whose worker then said nothing
    with rt.db.transaction() as cur:
        assert t.claim(cur, upload_task, uuid.uuid4(), 300, "test-worker") is not None
        t.apply(cur, t.REQUEST_PAUSE, upload_task, actor="test", reason="user")
    time.sleep(0.5)
    # Then it is counted as pausing, and the oldest pausing task's age grows
    first = samples(queued_client)
    assert value(first, "collect_tasks", kind="upload", state="pausing") == value(
        before, "collect_tasks", kind="upload", state="pausing") + 1
    assert value(first, "collect_task_oldest_in_state_seconds", kind="upload", state="pausing") >= 0.5
    time.sleep(0.2)
    second = samples(queued_client)
    assert value(second, "collect_task_oldest_in_state_seconds", kind="upload", state="pausing") > value(
        first, "collect_task_oldest_in_state_seconds", kind="upload", state="pausing")


def test_an_unreachable_redis_leaves_the_database_metrics(rt):
    # Given a gateway whose Redis does not answer (nothing listens on port 1)
    settings = dataclasses.replace(rt.settings, redis_url="redis://127.0.0.1:1/0")
    client = testing.TestClient(create_app(rt.db, RedisBroker(url=settings.redis_url), settings))
    # Then /metrics still answers, says so, and has the task metrics
    scraped = samples(client)
    assert value(scraped, "collect_metrics_source_up", source="redis") == 0
    assert value(scraped, "collect_metrics_source_up", source="postgresql") == 1
    text = client.simulate_get("/metrics").text
    assert "# TYPE collect_queue_depth" not in text
    assert "# TYPE collect_tasks gauge" in text


def test_a_pause_that_times_out_is_counted(rt, queued_client, upload_task):
    before = samples(queued_client)
    # Given a queued task paused with no time to spare, then revoked by the pause timeout
    with rt.db.transaction() as cur:
        t.apply(cur, t.PAUSE_QUEUED, upload_task, actor="test", reason="user", pause_timeout=0)
    with rt.db.transaction() as cur:
        t.apply(cur, t.EXPIRE_PAUSE, upload_task, actor="test", reason="pause_timeout")
    # Then the pause-timeout revocations of its kind went up by one
    after = samples(queued_client)
    assert value(after, "collect_task_pause_timeout_revocations_total", kind="upload") == value(
        before, "collect_task_pause_timeout_revocations_total", kind="upload") + 1


def test_an_export_counts_the_rows_and_bytes_it_wrote(rt, client, worker):
    # Given 300 responses of an organization
    key = new_key(rt)
    upload_responses(client, key, csv_bytes(300, seed=3))
    before = samples(client)
    # When all of them are exported
    data = export_csv(client, key, from_date="2000-01-01", to_date="2100-12-31")
    # Then the export's rows and bytes processed went up by exactly its file's (the header is no row)
    after = samples(client)
    assert len(rows_of(data)) == 301
    assert value(after, "collect_task_rows_processed_total", kind="export") == value(
        before, "collect_task_rows_processed_total", kind="export") + 300
    assert value(after, "collect_task_bytes_processed_total", kind="export") == value(
        before, "collect_task_bytes_processed_total", kind="export") + len(data) - (data.index(b"\n") + 1)
