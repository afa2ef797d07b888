"""GET /api/tasks/?id_prefix=...: the server side of abbreviated task ids, within the caller's organization."""

from __future__ import annotations

import uuid

import pytest

from shared import orgs
from shared import tasks as t
from tests.conftest import auth, new_key


def make_task(rt, key: str, task_id: str) -> None:
    """A task with a chosen id in the key's organization (queued on a queue no worker reads)."""
    with rt.db.transaction() as cur:
        organization_id, _ = orgs.authenticate(cur, key)
        t.create_task(cur, organization_id=organization_id, kind="upload", queue_name="nowhere",
                      actor_name="nothing", progress_unit="bytes", actor="test", task_id=uuid.UUID(task_id))


def ids(client, key: str, prefix: str) -> list[str]:
    result = client.simulate_get("/api/tasks/", params={"id_prefix": prefix}, headers=auth(key))
    assert result.status_code == 200, result.text
    assert result.json["total"] == len(result.json["tasks"])
    return sorted(task["task_id"] for task in result.json["tasks"])


def test_a_prefix_finds_the_tasks_whose_id_starts_with_it_in_the_callers_organization_only(client, rt):
    # Given two tasks sharing their first 8 characters, and a third one of another organization
    key, other_key = new_key(rt), new_key(rt)
    base = uuid.uuid4().hex[:8]
    first, second = f"{base}-1111-4111-8111-111111111111", f"{base}-2222-4222-8222-222222222222"
    make_task(rt, key, first)
    make_task(rt, key, second)
    make_task(rt, other_key, f"{base}-1111-4111-8111-999999999999")
    # Then 8 characters match both, more characters one, in any case, and the other organization's never
    assert ids(client, key, base) == [first, second]
    assert ids(client, key, f"{base}-1") == [first]
    assert ids(client, key, f"{base}-1111-4111-8111-1".upper()) == [first]
    assert ids(client, key, first) == [first]
    assert ids(client, key, f"{base}-1111-4111-8111-9") == []
    assert ids(client, other_key, f"{base}-1111") == [f"{base}-1111-4111-8111-999999999999"]
    # And dashes count where the id has them: the prefix is matched against the id as it is shown
    assert ids(client, key, f"{base}1111") == []


@pytest.mark.parametrize("prefix", ["abcdef1", "abcdefgh", "abcdef12%", "abcdef12_", "-abcdef12",
                                    "abcdef12" + "0" * 29, "abc def12"])
def test_a_malformed_prefix_is_a_400_naming_the_parameter(client, api_key, prefix):
    result = client.simulate_get("/api/tasks/", params={"id_prefix": prefix}, headers=auth(api_key))
    assert result.status_code == 400
    assert result.headers["content-type"] == "application/problem+json"
    assert result.json["parameter"] == "id_prefix"
