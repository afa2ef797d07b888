"""The dashboard in real headless Chromium against the real stack (`collect up`): sign in, upload through
the form and steer the task with the buttons, export and download, revoke after confirming, organizations
kept apart, a bad key explained; no console errors and no request to any other host."""

from __future__ import annotations

import csv
import io
import json
import re
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

from scripts.sample_data import csv_bytes
from tests.conftest import count_responses, multipart, new_key, wait_for
from tests.dashboard.conftest import sign_in

UPLOAD_ROWS = 100_000


def row(page, task_id: str):
    return page.locator(f'#task-rows tr[data-task-id="{task_id}"]')


def badge_text(page, task_id: str) -> str:
    return row(page, task_id).locator(".badge").inner_text()


def wait_badge(page, task_id: str, state: str, timeout: float = 60) -> None:
    wait_for(lambda: badge_text(page, task_id) == state, timeout=timeout, interval=0.1)


def upload_through_form(page, tmp_path, rows: int, seed: int) -> str:
    """Choose a generated CSV in the upload form and send it; returns the new task's id."""
    path = tmp_path / f"responses-{seed}.csv"
    path.write_bytes(csv_bytes(rows, seed=seed))
    page.locator("#upload-file").set_input_files(str(path))
    page.get_by_role("button", name="Upload", exact=True).click()
    status = page.locator("#upload-status")
    wait_for(lambda: status.get_attribute("data-task-id"), timeout=60, interval=0.1)
    return status.get_attribute("data-task-id")


def api_upload(base: str, key: str, data: bytes) -> str:
    body, headers = multipart(data)
    request = urllib.request.Request(f"{base}/api/upload-file/", data=body, method="POST",
                                     headers={**headers, "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["task_id"]


def test_sign_in_with_the_dev_key_shows_the_table_and_sign_out_forgets_the_key(open_dashboard, stack):
    # Given the dashboard at /
    watched = open_dashboard()
    page = watched.page
    # When the key that `collect up --dev-key` printed is entered
    sign_in(page, stack.dev_key)
    # Then the task table is shown and the key is in sessionStorage only (no cookie, not in the URL)
    page.locator("#page-info").wait_for(state="visible")
    assert page.evaluate("sessionStorage.getItem('collect.apiKey')") == stack.dev_key
    assert page.context.cookies() == []
    assert stack.dev_key not in page.url
    assert not any(stack.dev_key in url for url in watched.requests)
    # When the user signs out, the key is gone and the sign-in form is back
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API key").wait_for(state="visible")
    assert page.evaluate("sessionStorage.getItem('collect.apiKey')") is None
    watched.assert_clean()


def test_a_bad_key_gets_a_clear_message(open_dashboard):
    page = open_dashboard().page
    page.get_by_label("API key").fill("ck_not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    message = page.locator("#sign-in-error")
    message.wait_for(state="visible")
    assert "API key was not accepted" in message.inner_text()
    assert page.locator("#app-view").is_hidden()
    assert page.evaluate("sessionStorage.getItem('collect.apiKey')") is None


def test_upload_pause_resume_completes_with_the_exact_row_count(open_dashboard, rt, tmp_path):
    # Given a signed-in user of a new organization
    watched = open_dashboard()
    page = watched.page
    sign_in(page, new_key(rt, "dash-upload"))
    # When a CSV is uploaded through the form
    task_id = upload_through_form(page, tmp_path, UPLOAD_ROWS, seed=11)
    # Then the row's progress bar moves while the task runs
    bar = row(page, task_id).get_by_role("progressbar")
    seen: set[float] = set()

    def moved() -> bool:
        seen.add(float(bar.get_attribute("aria-valuenow") or 0))
        return len({v for v in seen if 0 < v < 100}) >= 2

    wait_for(moved, timeout=60, interval=0.2)
    # When Pause is pressed
    row(page, task_id).get_by_role("button", name=re.compile("^Pause")).click()
    # Then the badge shows paused (after pausing) and the rows are frozen
    wait_badge(page, task_id, "paused", timeout=30)
    done = row(page, task_id).locator("td").nth(3).inner_text()
    inserted = count_responses(rt, task_id)
    assert 0 < inserted < UPLOAD_ROWS
    assert "auto-revoked in" in row(page, task_id).locator(".countdown").inner_text()
    assert row(page, task_id).get_by_role("button", name=re.compile("^Pause")).is_disabled()
    time.sleep(2.5)
    assert row(page, task_id).locator("td").nth(3).inner_text() == done
    assert count_responses(rt, task_id) == inserted
    # When Resume is pressed, the task ends completed
    row(page, task_id).get_by_role("button", name=re.compile("^Resume")).click()
    wait_badge(page, task_id, "completed", timeout=120)
    # Then the detail view shows the exact row count, and the database holds exactly those rows
    row(page, task_id).get_by_role("button", name=re.compile("^Details")).click()
    dialog = page.locator("#detail-dialog")
    dialog.get_by_text("Rows inserted", exact=True).wait_for()
    facts = dialog.locator("dl.facts").last
    wait_for(lambda: "100,000" in facts.inner_text(), timeout=10)
    events = dialog.locator("table.events").inner_text()
    assert "running → pausing" in events and "paused → queued" in events
    assert count_responses(rt, task_id) == UPLOAD_ROWS
    page.get_by_role("button", name="Close").click()
    watched.assert_clean()


def test_export_through_the_form_and_download_the_file(open_dashboard, rt, stack, tmp_path):
    # Given an organization with 3,000 responses (uploaded through the API)
    key = new_key(rt, "dash-export")
    data = csv_bytes(3_000, seed=21)
    upload_id = api_upload(stack.url, key, data)
    watched = open_dashboard()
    page = watched.page
    sign_in(page, key)
    wait_badge(page, upload_id, "completed")
    records = list(csv.DictReader(io.StringIO(data.decode())))
    wanted = {r["response_id"] for r in records
              if datetime(2024, 3, 1, tzinfo=UTC) <= datetime.fromisoformat(r["submitted_at"])
              < datetime(2024, 6, 1, tzinfo=UTC)}
    assert 0 < len(wanted) < len(records)
    # When an export from March to May 2024 is started through the form
    page.get_by_label("From").fill("2024-03-01")
    page.get_by_label("To", exact=True).fill("2024-05-31")
    page.get_by_role("button", name="Export", exact=True).click()
    status = page.locator("#export-status")
    download_button = status.get_by_role("button", name="Download CSV")
    download_button.wait_for(timeout=60_000)
    assert "completed" in status.inner_text()
    # Then Download saves the file, which has exactly the responses of that range
    with page.expect_download() as downloaded:
        download_button.click()
    path = tmp_path / "export.csv"
    downloaded.value.save_as(path)
    with path.open(newline="", encoding="utf-8") as file:
        exported = list(csv.DictReader(file))
    assert {r["response_id"] for r in exported} == wanted
    assert len(exported) == len(wanted)
    watched.assert_clean()


def test_revoke_asks_for_confirmation_says_what_is_rolled_back_and_ends_revoked(open_dashboard, rt, tmp_path):
    # Given an upload paused part-way through
    watched = open_dashboard(width=390)
    page = watched.page
    sign_in(page, new_key(rt, "dash-revoke"))
    task_id = upload_through_form(page, tmp_path, UPLOAD_ROWS, seed=31)
    wait_badge(page, task_id, "running")
    row(page, task_id).get_by_role("button", name=re.compile("^Pause")).click()
    wait_badge(page, task_id, "paused", timeout=30)
    inserted = count_responses(rt, task_id)
    assert inserted > 0
    # When Revoke is pressed, a confirmation says how many rows will be deleted
    row(page, task_id).get_by_role("button", name=re.compile("^Revoke")).click()
    confirm = page.locator("#confirm-dialog")
    confirm.wait_for(state="visible")
    assert f"{inserted:,} rows will be deleted" in confirm.inner_text()
    # And after confirming, the task ends revoked with its rows gone
    confirm.get_by_role("button", name="Revoke and roll back").click()
    wait_badge(page, task_id, "revoked", timeout=60)
    assert count_responses(rt, task_id) == 0
    for action in ("Pause", "Resume", "Revoke"):
        assert row(page, task_id).get_by_role("button", name=re.compile(f"^{action}")).is_disabled()
    watched.assert_clean()


def test_another_organizations_key_does_not_show_the_first_ones_tasks(open_dashboard, rt, stack):
    # Given a task of one organization
    first_key = new_key(rt, "dash-first")
    task_id = api_upload(stack.url, first_key, csv_bytes(10, seed=41))
    watched = open_dashboard()
    page = watched.page
    sign_in(page, first_key)
    row(page, task_id).wait_for()
    page.get_by_role("button", name="Sign out").click()
    # When a user of another organization signs in
    sign_in(page, new_key(rt, "dash-second"))
    # Then their table is empty: the first organization's task is not shown
    wait_for(lambda: page.locator("#page-info").inner_text() == "0 tasks", timeout=10)
    assert row(page, task_id).count() == 0
    assert page.locator("#task-rows tr").count() == 0
    watched.assert_clean()


def test_a_refused_upload_shows_the_problem_detail(open_dashboard, rt, stack, tmp_path):
    # Given a file whose header lacks the required columns
    key = new_key(rt, "dash-refused")
    path = tmp_path / "no-header.csv"
    path.write_bytes(b"name,answer\nada,42\n")
    body, headers = multipart(path.read_bytes())
    request = urllib.request.Request(f"{stack.url}/api/upload-file/", data=body, method="POST",
                                     headers={**headers, "Authorization": f"Bearer {key}"})
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("the API accepted a file without the required columns")
    except urllib.error.HTTPError as error:
        assert error.code == 422
        problem = json.load(error)
    page = open_dashboard().page
    sign_in(page, key)
    # When it is uploaded through the form
    page.locator("#upload-file").set_input_files(str(path))
    page.get_by_role("button", name="Upload", exact=True).click()
    # Then the form says it was refused, in the problem's own words, and no task was created
    message = page.locator("#upload-status [role=alert]")
    message.wait_for()
    assert "refused" in message.inner_text()
    assert problem["detail"] in message.inner_text()
    assert page.locator("#upload-status").get_attribute("data-task-id") is None


def test_an_action_the_task_no_longer_allows_is_explained_in_plain_words(open_dashboard, rt, stack):
    # Given a paused upload shown with its Resume button enabled
    key = new_key(rt, "dash-conflict")
    task_id = api_upload(stack.url, key, csv_bytes(50_000, seed=51))
    wait_for(lambda: api_call(stack.url, "POST", f"/api/pause/{task_id}/?wait=10", key)["state"] == "paused",
             timeout=60, interval=0.2)
    page = open_dashboard().page
    sign_in(page, key)
    wait_badge(page, task_id, "paused")
    # And the tab stops polling, as a hidden tab does, so the row is not refreshed meanwhile
    page.evaluate("Object.defineProperty(document, 'hidden', {value: true, configurable: true})")
    page.wait_for_timeout(1500)
    # When someone else revokes the task, and then Resume is pressed on the stale row
    assert api_call(stack.url, "POST", f"/api/revoke/{task_id}/?wait=10", key)["state"] in ("revoking", "revoked")
    row(page, task_id).get_by_role("button", name=re.compile("^Resume")).click()
    # Then the 409 is shown in plain words: the problem's title and detail, with the task's state
    notice = page.locator("#notice")
    notice.wait_for(state="visible")
    text = notice.inner_text()
    assert text.startswith("Could not resume the task. Invalid Task Transition: cannot resume task"), text
    assert "revok" in text
    # And the row shows the state the server answered with
    wait_for(lambda: badge_text(page, task_id) in ("revoking", "revoked"), timeout=10, interval=0.1)


def api_call(base: str, method: str, path: str, key: str) -> dict:
    request = urllib.request.Request(base + path, method=method, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        return json.load(error)


def test_a_failed_task_can_be_resumed_from_its_checkpoint(open_dashboard, rt, stack):
    # Given an upload that stopped part-way and then failed, its committed rows kept (as a worker's permanent
    # failure leaves it: state failed, lease released)
    key = new_key(rt, "dash-failed")
    rows = 50_000
    task_id = api_upload(stack.url, key, csv_bytes(rows, seed=61))
    wait_for(lambda: count_responses(rt, task_id) > 0, timeout=60, interval=0.05)
    wait_for(lambda: api_call(stack.url, "POST", f"/api/pause/{task_id}/?wait=10", key)["state"] == "paused",
             timeout=60, interval=0.2)
    kept = count_responses(rt, task_id)
    with rt.db.transaction() as cur:
        cur.execute("""UPDATE tasks SET state = 'failed', finished_at = now(), paused_at = NULL,
                       pause_deadline = NULL, error = '{"code": "internal_error", "message": "disk full"}'
                       WHERE id = %s""", (task_id,))
    watched = open_dashboard()
    page = watched.page
    sign_in(page, key)
    wait_badge(page, task_id, "failed")
    # Then Resume and Revoke are offered, Pause is not
    assert row(page, task_id).get_by_role("button", name=re.compile("^Pause")).is_disabled()
    assert row(page, task_id).get_by_role("button", name=re.compile("^Revoke")).is_enabled()
    # When Resume is pressed, the task continues from its checkpoint and ends with every row exactly once
    row(page, task_id).get_by_role("button", name=re.compile("^Resume")).click()
    wait_badge(page, task_id, "completed", timeout=120)
    assert 0 < kept < rows
    assert count_responses(rt, task_id) == rows
    watched.assert_clean()
