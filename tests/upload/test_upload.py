"""Upload: counts, rejections, duplicates, header errors and the size cap."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
from datetime import UTC

from falcon import testing

from scripts.sample_data import csv_bytes
from tests.conftest import auth, count_responses, get_task, multipart, upload, wait_for_state

HEADER = "response_id,form_id,submitted_at,name,city\n"


def test_upload_inserts_rows_and_reports_counts(client, api_key, worker, rt):
    # Given a file with good rows, a duplicate, malformed rows and a blank line
    data = (
        HEADER
        + "6f1d7a2c-1111-4a8e-9d5e-0c1b2a3d4e5f,f1,2024-01-02T03:04:05Z,Zoë,\"Paris, FR\"\n"
        + "6F1D7A2C-2222-4A8E-9D5E-0C1B2A3D4E5F,f1,2024-01-02,\"multi\nline\",Pune\n"
        + "not-a-uuid,f1,2024-01-02,x,y\n"
        + "6f1d7a2c-3333-4a8e-9d5e-0c1b2a3d4e5f,f1,yesterday,x,y\n"
        + "6f1d7a2c-4444-4a8e-9d5e-0c1b2a3d4e5f,f1,2024-01-02\n"
        + "\n"
        + "6f1d7a2c-1111-4a8e-9d5e-0c1b2a3d4e5f,f1,2024-01-02T03:04:05Z,again,\n"
    ).encode()
    # When it is uploaded
    result = upload(client, api_key, data)
    assert result.status_code == 202, result.text
    assert result.json["state"] == "queued"
    task = wait_for_state(client, api_key, result.json["task_id"], "completed")
    # Then the good rows are inserted, the rest counted with line numbers and reasons
    assert task["result"]["rows_inserted"] == 2
    assert task["result"]["rows_skipped_duplicate"] == 1
    assert task["result"]["rows_rejected"] == 3
    assert [r["line"] for r in task["result"]["rejections"]] == [5, 6, 7]
    assert "not a UUID" in task["result"]["rejections"][0]["reason"]
    assert "ISO-8601" in task["result"]["rejections"][1]["reason"]
    assert "expected 5 columns, found 3" in task["result"]["rejections"][2]["reason"]
    assert task["progress"]["done"] == task["progress"]["total"] == len(data)
    with rt.db.transaction() as cur:
        cur.execute("SELECT answers, submitted_at FROM response_answers WHERE response_id = %s",
                    ("6f1d7a2c-2222-4a8e-9d5e-0c1b2a3d4e5f",))
        row = cur.fetchone()
    assert row["answers"] == {"name": "multi\nline", "city": "Pune"}
    assert row["submitted_at"].isoformat() == "2024-01-02T00:00:00+00:00"


def test_only_first_100_rejections_are_kept(client, api_key, worker):
    data = (HEADER + "".join(f"bad-{i},f1,2024-01-01,a,b\n" for i in range(150))).encode()
    task_id = upload(client, api_key, data).json["task_id"]
    task = wait_for_state(client, api_key, task_id, "completed")
    assert task["result"]["rows_rejected"] == 150
    assert len(task["result"]["rejections"]) == 100
    assert task["result"]["rejections"][-1]["line"] == 101


def test_generated_file_uploads_completely(client, api_key, worker, rt):
    data = csv_bytes(1000, seed=7)
    result = upload(client, api_key, data)
    task = wait_for_state(client, api_key, result.json["task_id"], "completed")
    assert task["result"] == {"rows_inserted": 1000, "rows_skipped_duplicate": 0, "rows_rejected": 0,
                              "rejections": [], "sha256": hashlib.sha256(data).hexdigest()}
    assert count_responses(rt, task["task_id"]) == 1000


def test_bad_headers_are_refused_before_anything_is_stored(client, api_key, rt):
    cases = {
        b"": "empty",
        b"\n\n": "empty",
        b"response_id,form_id,name\nx,y,z\n": "submitted_at",
        b"response_id,form_id,submitted_at,a,a\n": "more than once",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR": "not CSV",
        b"\xff\xfe\xfdresponse_id": "UTF-8",
    }
    with rt.db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM stored_files")
        files_before = cur.fetchone()["n"]
    for data, expected in cases.items():
        result = upload(client, api_key, data)
        assert result.status_code == 422, (data, result.text)
        assert result.headers["content-type"] == "application/problem+json"
        assert expected in result.json["detail"], (data, result.json)
    with rt.db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM stored_files")
        assert cur.fetchone()["n"] == files_before


def test_file_over_the_size_cap_is_refused_with_413(rt, api_key):
    from services.gateway.app import create_app

    small = dataclasses.replace(rt.settings, max_upload_bytes=1000)
    client = testing.TestClient(create_app(rt.db, rt.broker, small))
    data = csv_bytes(100)
    assert len(data) > 1000
    result = upload(client, api_key, data)
    assert result.status_code == 413
    assert "MAX_UPLOAD_BYTES" in result.json["detail"]
    # A body far over the cap is refused from its Content-Length alone.
    body, headers = multipart(b"x" * 200_000)
    result = client.simulate_post("/api/upload-file/", body=body, headers={**headers, **auth(api_key)})
    assert result.status_code == 413
    # And a file under the cap still goes through.
    assert upload(client, api_key, csv_bytes(2)).status_code == 202


def test_upload_request_errors(client, api_key):
    assert client.simulate_post("/api/upload-file/", body=b"a,b", headers={
        "Content-Type": "text/csv", **auth(api_key)}).status_code == 415
    body, headers = multipart(b"response_id,form_id,submitted_at\n", field="other")
    result = client.simulate_post("/api/upload-file/", body=body, headers={**headers, **auth(api_key)})
    assert result.status_code == 400
    assert "'file'" in result.json["detail"]


def test_api_requires_a_valid_key(client):
    assert client.simulate_get("/api/tasks/").status_code == 401
    result = client.simulate_get("/api/tasks/", headers=auth("ck_nope"))
    assert result.status_code == 401
    assert result.headers["www-authenticate"].startswith("Bearer")
    assert result.json["status"] == 401


def test_rows_already_stored_are_skipped_and_counted(client, api_key, worker, rt):
    # Given 300 responses already imported
    first = csv_bytes(300, seed=21)
    first_task = wait_for_state(client, api_key, upload(client, api_key, first).json["task_id"], "completed")
    assert first_task["result"]["rows_inserted"] == 300
    # When a file holding those 300 and 500 new ones (spread over several batches) is uploaded
    header, _, rows = first.partition(b"\n")
    new_rows = csv_bytes(500, seed=22).partition(b"\n")[2]
    task_id = upload(client, api_key, header + b"\n" + new_rows + rows).json["task_id"]
    task = wait_for_state(client, api_key, task_id, "completed")
    # Then only the new ones are inserted, and the old ones keep their original upload
    assert task["result"]["rows_inserted"] == 500
    assert task["result"]["rows_skipped_duplicate"] == 300
    assert count_responses(rt, task_id) == 500
    assert count_responses(rt, first_task["task_id"]) == 300


def test_ids_repeated_in_the_next_batch_are_counted_once_whatever_batches_are_written_together(
        client, api_key, worker, rt):
    # Given a file of 6 batches (200 rows each) whose every other batch repeats the ids of the batch before,
    # the repeated id first in its batch (written beside the batch that holds it last)
    records = list(csv.reader(io.StringIO(csv_bytes(600, seed=23).decode(), newline="")))
    header, rows = records[0], records[1:]
    batches = [rows[i:i + 200] for i in range(0, 600, 200)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for batch in batches:
        writer.writerows(batch + list(reversed(batch)))
    data = out.getvalue().encode()
    # When it is uploaded (UPLOAD_COPY_STREAMS is 2: two batches are written at once)
    task = wait_for_state(client, api_key, upload(client, api_key, data).json["task_id"], "completed", timeout=60)
    # Then each id is stored once and each repeat counted once
    assert rt.settings.upload_copy_streams == 2
    assert task["result"]["rows_inserted"] == 600
    assert task["result"]["rows_skipped_duplicate"] == 600
    assert count_responses(rt, task["task_id"]) == 600


def test_a_batch_that_shares_an_id_with_the_one_before_is_not_written_beside_it():
    from services.upload.copy_lines import ParsedBatch
    from services.upload.importer import PlannedBatch

    earlier = PlannedBatch(ParsedBatch(0, ids=["a", "b"]), {})
    assert PlannedBatch(ParsedBatch(0, ids=["c", "b"]), {}).conflicts_with(earlier)
    assert not PlannedBatch(ParsedBatch(0, ids=["c", "d"]), {}).conflicts_with(earlier)


def test_submitted_at_forms_are_stored_as_the_instant_they_name(client, api_key, worker, rt):
    cases = {
        "2024-03-01": "2024-03-01T00:00:00+00:00",
        "2024-03-01T10:20": "2024-03-01T10:20:00+00:00",
        "2024-03-01 10:20:30.5": "2024-03-01T10:20:30.500000+00:00",
        "2024-03-01T10:20:30Z": "2024-03-01T10:20:30+00:00",
        "2024-03-01T10:20:30+05:30": "2024-03-01T04:50:30+00:00",
        "2024-03-01T10:20:30-0800": "2024-03-01T18:20:30+00:00",
        "20240301T102030": "2024-03-01T10:20:30+00:00",
        "2024-W09-5T10:20:30": "2024-03-01T10:20:30+00:00",
    }
    ids = {f"00000000-0000-4000-8000-{n:012d}": value for n, value in enumerate(cases)}
    data = "response_id,form_id,submitted_at\n" + "".join(f"{rid},f,{value}\n" for rid, value in ids.items())
    task_id = upload(client, api_key, data.encode()).json["task_id"]
    assert wait_for_state(client, api_key, task_id, "completed")["result"]["rows_inserted"] == len(cases)
    with rt.db.transaction() as cur:
        cur.execute("SELECT response_id::text AS id, submitted_at FROM responses WHERE upload_task_id = %s", (task_id,))
        stored = {row["id"]: row["submitted_at"].astimezone(UTC).isoformat()
                  for row in cur.fetchall()}
    assert {ids[rid]: value for rid, value in stored.items()} == cases


def test_the_uploaded_file_is_kept_until_its_retention_ends(client, api_key, worker, rt):
    # Given a completed upload
    task_id = upload(client, api_key, csv_bytes(50)).json["task_id"]
    wait_for_state(client, api_key, task_id, "completed")
    count = "SELECT count(*) AS n FROM stored_files WHERE task_id = %s"
    with rt.db.transaction() as cur:
        cur.execute(count, (task_id,))
        assert cur.fetchone()["n"] == 1
    # When the retention job runs before UPLOAD_FILE_RETENTION_HOURS have passed, the file stays
    from services.upload.actors import delete_expired_upload_files

    delete_expired_upload_files()
    with rt.db.transaction() as cur:
        cur.execute(count, (task_id,))
        assert cur.fetchone()["n"] == 1
        # And once the task finished longer ago than that
        cur.execute("UPDATE tasks SET finished_at = now() - make_interval(hours => %s) - interval '1 minute' "
                    "WHERE id = %s", (rt.settings.upload_file_retention_hours, task_id))
    delete_expired_upload_files()
    # Then the file is deleted, and the task still reports its result
    with rt.db.transaction() as cur:
        cur.execute(count, (task_id,))
        assert cur.fetchone()["n"] == 0
    assert get_task(client, api_key, task_id)["result"]["rows_inserted"] == 50


def test_a_file_name_with_path_and_nul_characters_is_stored_safely(client, api_key):
    result = upload(client, api_key, csv_bytes(2), filename="../../etc/pa\x00sswd.csv")
    assert result.status_code == 202, result.text
    assert "/" not in result.json["params"]["filename"] and "\x00" not in result.json["params"]["filename"]


def test_nul_characters_reject_only_their_rows(client, api_key, worker, rt):
    # Given rows with a NUL in an answer, in form_id, and in response_id, between good rows
    data = (
        HEADER
        + "6f1d7a2c-aaaa-4a8e-9d5e-0c1b2a3d4e5f,f1,2024-01-02,ok,fine\n"
        + "6f1d7a2c-bbbb-4a8e-9d5e-0c1b2a3d4e5f,f1,2024-01-02,n\x00l,x\n"
        + "6f1d7a2c-cccc-4a8e-9d5e-0c1b2a3d4e5f,f\x001,2024-01-02,a,b\n"
        + "6f1d7a2c-dddd-4a8e-9d5e-0c1b2a3d4e\x00,f1,2024-01-02,a,b\n"
        + "6f1d7a2c-eeee-4a8e-9d5e-0c1b2a3d4e5f,f1,2024-01-02,also,fine\n"
    ).encode()
    # When it is uploaded
    result = upload(client, api_key, data)
    assert result.status_code == 202, result.text
    task = wait_for_state(client, api_key, result.json["task_id"], "completed", "failed")
    # Then those rows are rejected with their line and reason, and the others imported
    assert task["state"] == "completed", task["error"]
    assert task["result"]["rows_inserted"] == 2
    assert [(r["line"], r["reason"]) for r in task["result"]["rejections"]] == [
        (3, "column 4 (name) holds a NUL character, which PostgreSQL text cannot store"),
        (4, "column 2 (form_id) holds a NUL character, which PostgreSQL text cannot store"),
        (5, "column 1 (response_id) holds a NUL character, which PostgreSQL text cannot store"),
    ]
    assert count_responses(rt, task["task_id"]) == 2


def test_a_nul_in_the_header_anywhere_is_422(client, api_key):
    long_names = ",".join(f"question_{i}" for i in range(600))  # the NUL lands past the first 4 KiB
    for header in ("response_id,form_id,submitted_at,na\x00me\n", f"response_id,form_id,submitted_at,"
                                                                   f"{long_names},la\x00st\n"):
        result = upload(client, api_key, header.encode() + b"6f1d7a2c-aaaa-4a8e-9d5e-0c1b2a3d4e5f,f1,2024-01-02\n")
        assert result.status_code == 422, result.text
        assert "NUL" in result.json["detail"]
