"""The export job: read the range's responses in (submitted_at, response_id) order, one keyset page per
batch, and append each page, as PostgreSQL formats it with COPY ... TO STDOUT, to the stored file.

The file's bytes and the checkpoint (last key written, bytes written) commit in the same batch
transaction, so a paused, crashed or resumed export produces the same bytes as one that ran straight through.
"""

from __future__ import annotations

import io
from typing import Any

from psycopg2 import sql

from shared import storage
from shared.batch_runner import Batch
from shared.tasks import Task

FIXED_COLUMNS = ("response_id", "form_id", "submitted_at")
FILE_PURPOSE = "export"

# OWASP CSV injection: a cell a spreadsheet would run as a formula gets a leading single quote. That is a
# cell whose first non-whitespace character is = + - @ or a full-width form of one (＝ ＋ － ＠), or which
# starts with a tab, CR or LF; plain numbers such as -3.5, +7 or " -1e3" are left as they are.
# Most cells start with none of these characters: a CASE on the first character (strpos in a short string)
# leaves the regular expression, which also weighs the number exception, to the few that do.
_FORMULA_CHARS = "=+@\uff1d\uff0b\uff0d\uff20-"
_LINE_BREAKS = "\t\r\n"
_SPACES = " \f\v\u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000\ufeff"
# strpos() of an empty string is 1: the leading "x" (a character that needs nothing) makes "> 1" mean "one
# of the characters after it", so an empty cell never reaches the regular expression.
_FORMULA_GATE = "x" + _FORMULA_CHARS + _LINE_BREAKS + _SPACES
_NUMBER = "[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?$"
_FORMULA_START = (f"^(?:(?=[{_LINE_BREAKS}])|(?=[{_SPACES}]*[{_FORMULA_CHARS}])(?![{_SPACES}]*{_NUMBER}))")


def _safe_cell(expression: sql.Composable) -> sql.Composed:
    return sql.SQL(
        "CASE WHEN strpos(%(formula_gate)s, left({0}, 1)) > 1"
        " THEN regexp_replace({0}, %(formula_start)s, '''') ELSE {0} END"
    ).format(expression)


def _question_params(columns: list[str]) -> dict[str, str]:
    """Question names are bound as parameters q0, q1, ... (a name may hold any character, even '%')."""
    return {f"q{i}": name for i, name in enumerate(columns)}


# ISO-8601 in UTC, with a fraction only when the moment has one: 2024-01-02T03:04:05Z, ...05.25Z
_SUBMITTED_AT_UTC = sql.SQL(
    """rtrim(rtrim(to_char(submitted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), '0'), '.')"""
    " || 'Z'"
)

# The rows of the range after the checkpoint's key. psycopg2 binds parameters on the client, so for the
# first batch (no key yet) the planner folds the NULL test away and both cases use responses_org_submitted.
_IN_RANGE_AFTER_KEY = """
    organization_id = %(org)s
    AND submitted_at >= %(from)s AND submitted_at <= %(to)s
    AND (%(form)s::text IS NULL OR form_id = %(form)s::text)
    AND (%(after_at)s::timestamptz IS NULL
         OR (submitted_at, response_id) > (%(after_at)s::timestamptz, %(after_id)s::uuid))
"""
# The last key of the next page: the page is then exactly the rows after the checkpoint up to this key.
_PAGE_END = f"""
SELECT submitted_at, response_id FROM (
    SELECT submitted_at, response_id FROM responses WHERE {_IN_RANGE_AFTER_KEY}
    ORDER BY submitted_at, response_id LIMIT %(limit)s
) AS page
ORDER BY submitted_at DESC, response_id DESC LIMIT 1
"""
_PAGE_SELECT = sql.SQL(
    f"""
    SELECT {{columns}} FROM responses
    WHERE {_IN_RANGE_AFTER_KEY}
      AND (submitted_at, response_id) <= (%(last_at)s::timestamptz, %(last_id)s::uuid)
    ORDER BY submitted_at, response_id
    """
)
_COPY_CSV = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)")
_HEADER = sql.SQL("SELECT {columns}")
# The forms with responses in the range, the form of the earliest response first, and their questions.
_FORMS_IN_RANGE = """
WITH in_range AS (
    SELECT form_id, count(*) AS responses, min(submitted_at) AS first_submitted_at FROM responses
    WHERE organization_id = %(org)s AND submitted_at >= %(from)s AND submitted_at <= %(to)s
      AND (%(form)s::text IS NULL OR form_id = %(form)s::text)
    GROUP BY form_id
)
SELECT r.form_id, r.responses, coalesce(f.questions, '{}') AS questions
FROM in_range r LEFT JOIN forms f ON f.organization_id = %(org)s AND f.form_id = r.form_id
ORDER BY r.first_submitted_at, r.form_id
"""


def download_path(task_id) -> str:
    return f"/api/tasks/{task_id}/download"


def page_select(columns: list[str]) -> sql.Composed:
    """The SELECT of one page's CSV rows: the fixed columns, then `columns` (bound as q0, q1, ...)."""
    selected = [sql.SQL("response_id"), _safe_cell(sql.SQL("form_id")), _SUBMITTED_AT_UTC]
    answer = sql.SQL("answers ->> {}")
    selected += [_safe_cell(answer.format(sql.Placeholder(f"q{i}"))) for i in range(len(columns))]
    return _PAGE_SELECT.format(columns=sql.SQL(", ").join(selected))


def bind(cur, statement: sql.Composable, params: dict[str, Any]) -> str:
    """`statement` with its parameters bound on the client, exactly as execute() would (COPY takes no
    bind parameters)."""
    return cur.mogrify(statement, {**params, "formula_gate": _FORMULA_GATE, "formula_start": _FORMULA_START}
                       ).decode()


def question_columns(forms: list[dict[str, Any]]) -> list[str]:
    """Each form's questions in its order, the forms in the given order, each question once."""
    return list(dict.fromkeys(question for form in forms for question in form["questions"]))


class ExportJob:
    """Exports one range, `batch_rows` responses a batch. The columns are fixed by the first batch and
    kept in the checkpoint, so a resumed export writes the same columns whatever uploads came since."""

    def __init__(self, batch_rows: int) -> None:
        self.batch_rows = batch_rows

    def _range(self, task: Task, checkpoint: dict[str, Any] | None) -> dict[str, Any]:
        after = (checkpoint or {}).get("after") or [None, None]
        params = task.params
        return {
            "org": task.organization_id, "from": params["submitted_from"], "to": params["submitted_to"],
            "form": params.get("form_id"), "after_at": after[0], "after_id": after[1],
        }

    def _start(self, cur, task: Task) -> dict[str, Any]:
        """Create the file, fix the columns, count the rows and write the header row."""
        cur.execute(_FORMS_IN_RANGE, self._range(task, None))
        forms = cur.fetchall()
        columns = question_columns(forms)
        file_id = storage.create_file(cur, organization_id=task.organization_id, purpose=FILE_PURPOSE,
                                      filename=task.params.get("filename"), task_id=task.id)
        header = [sql.Literal(name) for name in FIXED_COLUMNS]
        header += [_safe_cell(sql.Placeholder(f"q{i}")) for i in range(len(columns))]
        header_row = self._copy(cur, _HEADER.format(columns=sql.SQL(", ").join(header)),
                                _question_params(columns))
        size = storage.append(cur, file_id, header_row, 0)
        return {"file_id": str(file_id), "columns": columns, "total": sum(f["responses"] for f in forms),
                "after": None, "rows": 0, "bytes": size}

    @staticmethod
    def _copy(cur, select: sql.Composable, params: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        cur.copy_expert(bind(cur, _COPY_CSV.format(select), params), buffer)
        return buffer.getvalue()

    def run_batch(self, cur, task: Task, checkpoint: dict[str, Any] | None) -> Batch:
        if checkpoint is None:
            checkpoint = self._start(cur, task)
        where = self._range(task, checkpoint)
        cur.execute(_PAGE_END, {**where, "limit": self.batch_rows})
        last = cur.fetchone()
        rows, size = checkpoint["rows"], checkpoint["bytes"]
        after = checkpoint["after"]
        if last is not None:
            page = self._copy(cur, page_select(checkpoint["columns"]),
                              {**where, **_question_params(checkpoint["columns"]),
                               "last_at": last["submitted_at"], "last_id": last["response_id"]})
            rows += cur.rowcount
            size = storage.append(cur, checkpoint["file_id"], page, size)
            after = [last["submitted_at"].isoformat(), str(last["response_id"])]
        # Finished only when no row is left after the key: a short page may just have lost rows deleted
        # between the two statements, so it does not prove the range is done.
        finished = last is None
        new = {**checkpoint, "after": after, "rows": rows, "bytes": size}
        result = {"rows": rows, "bytes": size, "download": download_path(task.id)} if finished else None
        return Batch(checkpoint=new, done=rows, total=checkpoint["total"], finished=finished, result=result,
                     rows=rows - checkpoint["rows"], bytes=size - checkpoint["bytes"])

    def rollback(self, cur, task: Task) -> None:
        """An export's only effect is its file: deleted here too, so that a failed export leaves none."""
        storage.delete_task_files(cur, task.id)

    def close(self) -> None:
        """Nothing is held between batches."""
