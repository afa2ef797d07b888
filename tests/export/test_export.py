"""Export: columns, order, ranges, form filter, CSV injection, round trip, organizations, bad requests."""

from __future__ import annotations

import csv
import io

import pytest

from scripts.sample_data import csv_bytes
from tests.conftest import auth, new_key, upload, wait_for_state
from tests.export.conftest import (
    csv_file,
    download,
    export_csv,
    rows_of,
    start_export,
    upload_responses,
)

ID = "6f1d7a2c-{:04d}-4a8e-9d5e-0c1b2a3d4e5f"
HEADER = ["response_id", "form_id", "submitted_at", "name", "city", "age"]


def test_export_lists_responses_in_order_with_the_forms_questions(client, api_key, worker):
    # Given two forms; the later one shares a question with the earlier one
    upload_responses(client, api_key, csv_file(
        HEADER,
        [ID.format(3), "f2", "2024-01-02T10:00:00Z", "", "Pune", "41"],
        [ID.format(1), "f1", "2024-01-02T09:00:00+02:00", "Zoë", "Paris, FR", ""],
        [ID.format(2), "f1", "2024-01-02T08:00:00.250Z", "=HYPERLINK(\"x\")", "", ""],
    ))
    # When the day is exported
    data = export_csv(client, api_key, from_date="2024-01-02", to_date="2024-01-02")
    # Then the rows come in submitted_at order, times in UTC, the first form's questions first, each once
    assert data.decode() == (
        "response_id,form_id,submitted_at,name,city,age\n"
        f"{ID.format(1)},f1,2024-01-02T07:00:00Z,Zoë,\"Paris, FR\",\n"
        f"{ID.format(2)},f1,2024-01-02T08:00:00.25Z,\"'=HYPERLINK(\"\"x\"\")\",,\n"
        f"{ID.format(3)},f2,2024-01-02T10:00:00Z,,Pune,41\n"
    )


FORMULA_CELLS = {
    "=1+1": "'=1+1", "+cmd": "'+cmd", "-2+3": "'-2+3", "@SUM(A1)": "'@SUM(A1)", "\tx": "'\tx", "\rx": "'\rx",
    "-3.5": "-3.5", "+7": "+7", "-1e5": "-1e5", "a=b": "a=b", "-": "'-", " =1+1": "' =1+1", "\n=1+1": "'\n=1+1",
    "\uff1d1+1": "'\uff1d1+1", "\uff0bx": "'\uff0bx", "\uff0d1": "'\uff0d1", "\uff20x": "'\uff20x",
    "\u3000 @x": "'\u3000 @x", "  -3.5": "  -3.5", "1-2": "1-2", "\t-3": "'\t-3", 'x"=1': 'x"=1', '=""': "'=\"\"",
}


def test_formula_cells_are_neutralised_but_plain_numbers_are_not(client, api_key, worker):
    # Given rows each holding one cell that may look like a formula, after a plain cell (the upload marks a
    # row by its cells' first characters: a mark it misses would leave that row's cell as stored)
    cells = list(FORMULA_CELLS)
    upload_responses(client, api_key, csv_file(
        ["response_id", "form_id", "submitted_at", "plain", "cell"],
        [ID.format(0), "=form", "2024-03-01T00:00:00Z", "a", "b"],
        *[[ID.format(i + 1), "f", f"2024-03-01T00:00:{i + 1:02d}Z", "a", cell] for i, cell in enumerate(cells)],
    ))
    # When the day is exported
    rows = rows_of(export_csv(client, api_key, from_date="2024-03-01", to_date="2024-03-01"))[1:]
    # Then exactly the cells a spreadsheet would run get a leading quote, the form id included
    assert rows[0][1:] == ["'=form", "2024-03-01T00:00:00Z", "a", "b"]
    assert [row[4] for row in rows[1:]] == [FORMULA_CELLS[cell] for cell in cells]


def test_the_upload_marks_only_rows_with_a_cell_that_may_be_a_formula(client, api_key, rt, worker):
    # Given a plain row (a "-" inside a quoted cell), a row whose first answer starts with "+", and one whose
    # form id starts with "@"
    task = upload_responses(client, api_key, csv_file(
        HEADER,
        [ID.format(1), "f1", "2024-04-01T00:00:00Z", "Ann", 'said "-1"', "30"],
        [ID.format(2), "f1", "2024-04-01T00:00:01Z", "+1 call back", "", "3"],
        [ID.format(3), "@f", "2024-04-01T00:00:02Z", "Cy", "Oslo", ""],
    ))
    # Then only those two rows are marked: the plain one is exported without a look at its cells
    with rt.db.transaction() as cur:
        cur.execute("SELECT response_id::text, may_hold_formula FROM responses WHERE upload_task_id = %s",
                    (task["task_id"],))
        marks = {row["response_id"]: row["may_hold_formula"] for row in cur.fetchall()}
    assert marks == {ID.format(1): False, ID.format(2): True, ID.format(3): True}


def test_rows_stored_without_a_mark_have_every_cell_looked_at(client, api_key, rt, worker):
    # Given a row stored before rows were marked (the column's default), holding a formula cell
    task = upload_responses(client, api_key,
                            csv_file(HEADER, [ID.format(1), "f1", "2024-06-01T00:00:00Z", "Ann", "", ""]))
    with rt.db.transaction() as cur:
        cur.execute("INSERT INTO responses (organization_id, response_id, form_id, submitted_at, answers, layout_id) "
                    "SELECT organization_id, %s, form_id, submitted_at + interval '1 second', "
                    "ARRAY['=1+1', NULL, NULL], layout_id FROM responses WHERE upload_task_id = %s",
                    (ID.format(2), task["task_id"]))
    # When the day is exported
    rows = rows_of(export_csv(client, api_key, from_date="2024-06-01", to_date="2024-06-01"))
    # Then its formula cell is neutralised
    assert rows[2][3] == "'=1+1"


def test_files_with_different_headers_export_each_answer_under_its_question(client, api_key, worker):
    # Given two uploads of one form whose files order their questions differently, one lacking a question
    upload_responses(client, api_key, csv_file(
        HEADER, [ID.format(1), "f1", "2024-05-01T01:00:00Z", "Ann", "Oslo", "30"]))
    upload_responses(client, api_key, csv_file(
        ["city", "response_id", "extra", "form_id", "submitted_at", "name"],
        ["Rome", ID.format(2), "x", "f1", "2024-05-01T02:00:00Z", ""]))
    # When the day is exported
    data = export_csv(client, api_key, from_date="2024-05-01", to_date="2024-05-01")
    # Then each row's answers sit under their own question, whatever the position in its file
    assert rows_of(data) == [
        ["response_id", "form_id", "submitted_at", "name", "city", "age", "extra"],
        [ID.format(1), "f1", "2024-05-01T01:00:00Z", "Ann", "Oslo", "30", ""],
        [ID.format(2), "f1", "2024-05-01T02:00:00Z", "", "Rome", "", "x"],
    ]


def test_round_trip_upload_then_export_gives_back_the_same_responses(client, api_key, worker):
    # Given a realistic file (non-ASCII, commas, quotes, newlines in cells) and some edge values
    generated = csv_bytes(600, seed=11)
    upload_responses(client, api_key, generated)
    # When the whole range is exported
    data = export_csv(client, api_key, from_date="2024-01-01", to_date="2024-12-31")
    # Then every response comes back with the same values (formula-like text with its leading quote)
    uploaded = {row["response_id"]: row for row in csv.DictReader(io.StringIO(generated.decode(), newline=""))
                }
    exported = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    assert len(exported) == len(uploaded) == 600
    assert [r["submitted_at"] for r in exported] == sorted(r["submitted_at"] for r in exported)
    for row in exported:
        original = uploaded[row["response_id"]]
        for column, value in original.items():
            expected = "'" + value if value[:1] in ("=", "+", "-", "@") else value
            assert row.get(column, "") == expected, (row["response_id"], column)


def test_range_covers_whole_days_inclusively_and_honours_offsets(client, api_key, worker):
    upload_responses(client, api_key, csv_file(
        HEADER,
        [ID.format(1), "f", "2024-02-29T23:59:59.999999Z", "before", "", ""],
        [ID.format(2), "f", "2024-03-01T00:00:00Z", "first", "", ""],
        [ID.format(3), "f", "2024-03-02T23:59:59.999999Z", "last", "", ""],
        [ID.format(4), "f", "2024-03-03T00:00:00Z", "after", "", ""],
    ))

    def names(**query):
        return [row[3] for row in rows_of(export_csv(client, api_key, **query))[1:]]

    assert names(from_date="2024-03-01", to_date="2024-03-02") == ["first", "last"]
    # Date-times are exact and inclusive; an offset moves the moment (05:30 east is 5h30 earlier in UTC)
    assert names(from_date="2024-03-01T00:00:00Z", to_date="2024-03-03T00:00") == ["first", "last", "after"]
    assert names(from_date="2024-03-01T05:30:00+05:30",
                 to_date="2024-03-03T03:59:59.999999+04:00") == ["first", "last"]
    assert names(from_date="2024-03-01T05:30:00.000001+05:30", to_date="2024-03-03") == ["last", "after"]
    same_moment = {"from_date": "2024-03-02T19:59:59.999999-04:00", "to_date": "2024-03-02T23:59:59.999999Z"}
    assert names(**same_moment) == ["last"]
    # A '+' left unencoded in a query string arrives as a space and is read as the '+' it was
    assert names(from_date="2024-03-01T05:30:00 05:30", to_date="2024-03-01T05:30:00 05:30") == ["first"]


def test_form_filter_exports_only_that_forms_responses_and_questions(client, api_key, worker):
    upload_responses(client, api_key, csv_file(
        HEADER,
        [ID.format(1), "f1", "2024-01-02", "a", "x", ""],
        [ID.format(2), "f2", "2024-01-02", "", "y", "3"],
        [ID.format(3), "f1", "2024-01-03", "b", "", ""],
    ))
    started = start_export(client, api_key, from_date="2024-01-01", to_date="2024-01-31", form_id="f1")
    task = wait_for_state(client, api_key, started.json["task_id"], "completed")
    rows = rows_of(download(client, api_key, task["task_id"]).content)
    assert rows == [["response_id", "form_id", "submitted_at", "name", "city"],
                    [ID.format(1), "f1", "2024-01-02T00:00:00Z", "a", "x"],
                    [ID.format(3), "f1", "2024-01-03T00:00:00Z", "b", ""]]
    assert task["result"]["rows"] == 2


def test_empty_range_completes_with_a_header_only_file(client, api_key, worker):
    started = start_export(client, api_key, "GET", from_date="1999-01-01", to_date="1999-01-31")
    assert started.status_code == 202
    task = wait_for_state(client, api_key, started.json["task_id"], "completed")
    result = download(client, api_key, task["task_id"])
    assert result.content == b"response_id,form_id,submitted_at\n"
    assert task["result"] == {"rows": 0, "bytes": len(result.content),
                              "download": f"/api/tasks/{task['task_id']}/download"}
    assert task["progress"] == {"done": 0, "total": 0, "unit": "rows", "percent": None}


def test_completed_export_reports_rows_bytes_and_download(client, api_key, worker):
    upload_responses(client, api_key, csv_bytes(450, seed=5))
    started = start_export(client, api_key, from_date="2024-01-01", to_date="2024-12-31")
    assert started.status_code == 202
    assert started.headers["location"] == f"/api/tasks/{started.json['task_id']}/"
    assert started.json["kind"] == "export" and started.json["progress"]["unit"] == "rows"
    task = wait_for_state(client, api_key, started.json["task_id"], "completed")
    assert task["progress"]["done"] == task["progress"]["total"] == task["result"]["rows"] == 450
    result = download(client, api_key, task["task_id"])
    assert result.headers["content-type"] == "text/csv; charset=utf-8"
    assert result.headers["content-disposition"] == 'attachment; filename="export-2024-01-01-2024-12-31.csv"'
    assert int(result.headers["content-length"]) == len(result.content) == task["result"]["bytes"]


def test_another_organization_sees_nothing(client, api_key, worker, rt):
    upload_responses(client, api_key, csv_file(HEADER, [ID.format(1), "f", "2024-01-02", "mine", "", ""]))
    task = wait_for_state(client, api_key, start_export(
        client, api_key, from_date="2024-01-01", to_date="2024-01-31").json["task_id"], "completed")
    other = new_key(rt)
    # Its own export of the same range finds none of the first organization's responses
    nothing = export_csv(client, other, from_date="2024-01-01", to_date="2024-01-31")
    assert nothing == b"response_id,form_id,submitted_at\n"
    # And the first organization's export and its file do not exist for it
    assert client.simulate_get(f"/api/tasks/{task['task_id']}/", headers=auth(other)).status_code == 404
    result = download(client, other, task["task_id"])
    assert result.status_code == 404
    assert result.headers["content-type"] == "application/problem+json"


def test_download_before_completion_is_409_and_of_an_upload_is_404(client, api_key, rt):
    # Given an export that no worker has picked up (created without its message)
    from services import export
    from shared import tasks as t

    with rt.db.transaction() as cur:
        cur.execute("SELECT organization_id FROM api_keys WHERE key_prefix = %s", (api_key[:10],))
        organization_id = cur.fetchone()["organization_id"]
        task = t.create_task(cur, organization_id=organization_id, kind=export.KIND, queue_name=export.QUEUE,
                             actor_name=export.ACTOR, progress_unit="rows", actor="test")
    # Then its download is 409 naming the state
    result = download(client, api_key, str(task.id))
    assert result.status_code == 409
    assert result.json["state"] == "queued"
    assert "completed" in result.json["detail"]
    # And an upload has no download at all
    uploaded = upload(client, api_key, csv_file(HEADER))
    result = download(client, api_key, uploaded.json["task_id"])
    assert result.status_code == 404
    assert "not an export" in result.json["detail"]


@pytest.mark.parametrize(("query", "parameter", "words"), [
    ({"to_date": "2024-01-31"}, "from_date", "required"),
    ({"from_date": "2024-01-01"}, "to_date", "required"),
    ({"from_date": "", "to_date": "2024-01-31"}, "from_date", "required"),
    ({"from_date": "2024-13-01", "to_date": "2024-12-31"}, "from_date", "not a calendar date"),
    ({"from_date": "01/02/2024", "to_date": "2024-12-31"}, "from_date", "YYYY-MM-DD"),
    ({"from_date": "20240101", "to_date": "2024-12-31"}, "from_date", "YYYY-MM-DD"),
    ({"from_date": "2024-01-01", "to_date": "2024-01-01T25:00"}, "to_date", "ISO-8601"),
    ({"from_date": "2024-02-01", "to_date": "2024-01-31"}, "from_date", "after to_date"),
    ({"from_date": "2024-01-01T12:00:00Z", "to_date": "2024-01-01T11:59:59Z"}, "from_date", "after"),
    ({"from_date": "2024-01-01", "to_date": "2024-01-31", "form_id": " "}, "form_id", "empty"),
    ({"from_date": "2024-01-01", "to_date": "2024-01-31", "form_id": "a\x00b"}, "form_id", "NUL"),
    ({"from_date": "0001-01-01T00:00:00+14:00", "to_date": "2024-01-31"}, "from_date", "outside"),
    ({"from_date": "2024-01-01", "to_date": "2024-01-31", "format": "xlsx"}, "format", "unknown"),
    ({"from_date": ["2024-01-01", "2024-01-02"], "to_date": "2024-01-31"}, "from_date", "more than once"),
])
def test_bad_parameters_are_400_naming_the_parameter(client, api_key, rt, query, parameter, words):
    with rt.db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM tasks WHERE kind = 'export'")
        before = cur.fetchone()["n"]
    result = start_export(client, api_key, **query)
    assert result.status_code == 400, result.text
    assert result.headers["content-type"] == "application/problem+json"
    assert result.json["parameter"] == parameter
    assert parameter in result.json["detail"] and words in result.json["detail"], result.json
    with rt.db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM tasks WHERE kind = 'export'")
        assert cur.fetchone()["n"] == before


def test_export_requires_a_key(client):
    assert client.simulate_post("/api/export/", params={"from_date": "2024-01-01", "to_date": "2024-01-02"}
                                ).status_code == 401


def test_the_original_apis_url_form_with_a_slash_after_to_date_works(client, api_key, worker):
    # The seed project documented /api/export/?from_date={}&to_date={}/
    result = client.simulate_get("/api/export/", query_string="from_date=2024-01-01&to_date=2024-01-31/",
                                 headers=auth(api_key))
    assert result.status_code == 202, result.text
    assert result.json["params"]["to_date"] == "2024-01-31"
