"""The export job: read the range's responses in (submitted_at, response_id) order, one page per batch,
and append each page, as PostgreSQL formats it with COPY ... TO STDOUT, to the stored file.

Pages are bounded ranges of keys found ahead by a probe, read several at once on connections of their own
(services.export.pages). The file's bytes and the checkpoint (last key written, bytes written) commit in
the same batch transaction, so a paused, crashed or resumed export produces the same bytes as one that
ran straight through.
"""

from __future__ import annotations

import io
from typing import Any

from psycopg2 import sql

from services.export.pages import Key, PageReader
from shared import storage
from shared.batches import Batch
from shared.formula_cells import FIRST_CHARACTERS, FORMULA_START
from shared.tasks import Task

FIXED_COLUMNS = ("response_id", "form_id", "submitted_at")
FILE_PURPOSE = "export"

# Cells a spreadsheet would run as a formula get a leading single quote (shared.formula_cells). Most cells
# start with none of the characters that may need it: a CASE on the first character (strpos in a short
# string) leaves the regular expression, which also weighs the number exception, to the few that do.
# strpos() of an empty string is 1: the leading "x" (a character that needs nothing) makes "> 1" mean "one
# of the characters after it", so an empty cell never reaches the regular expression.
_FORMULA_GATE = "x" + FIRST_CHARACTERS
# The parameters every statement with a _safe_cell takes.
_FORMULA_PARAMS = {"formula_gate": _FORMULA_GATE, "formula_start": FORMULA_START}


def _safe_cell(expression: sql.Composable) -> sql.Composed:
    return sql.SQL(
        "CASE WHEN strpos(%(formula_gate)s, left({0}, 1)) > 1"
        " THEN regexp_replace({0}, %(formula_start)s, '''') ELSE {0} END"
    ).format(expression)


def _safe_stored_cell(expression: sql.Composable) -> sql.Composed:
    """A stored row's cell: looked at only when the upload marked the row (shared.formula_cells)."""
    return sql.SQL("CASE WHEN may_hold_formula THEN {} ELSE {} END").format(_safe_cell(expression), expression)


def _question_params(columns: list[str]) -> dict[str, str]:
    """Question names are bound as parameters q0, q1, ... (a name may hold any character, even '%')."""
    return {f"q{i}": name for i, name in enumerate(columns)}


# ISO-8601 in UTC, with a fraction only when the moment has one: 2024-01-02T03:04:05Z, ...05.25Z. It is
# timestamptz's own output under TimeZone UTC and DateStyle ISO ("2024-01-02 03:04:05.25+00", which drops a
# fraction's trailing zeros too) with the T and Z put in: a third of the cost of to_char and two rtrims.
_SUBMITTED_AT_UTC = sql.SQL("replace(left(submitted_at::text, -3), ' ', 'T') || 'Z'")
_OUTPUT_SETTINGS = "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, MDY'"
# A page is a range of keys read in key order: only the index gives that order. The planner cannot tell
# how many rows lie between two row-valued keys and may take the page for most of the table, then plan a
# scan of it all and a sort, for every page; without sorts (and parallel workers) it follows the index.
# The probe for a page's end, in the same transaction, is planned the same way.
_PAGE_SETTINGS = f"{_OUTPUT_SETTINGS}; SET LOCAL enable_sort = off; SET LOCAL max_parallel_workers_per_gather = 0"

# The rows of the range after the checkpoint's key. psycopg2 binds parameters on the client, so for the
# first batch (no key yet) the planner folds the NULL test away and both cases use responses_org_submitted.
_IN_RANGE_AFTER_KEY = """
    organization_id = %(org)s
    AND submitted_at >= %(from)s AND submitted_at <= %(to)s
    AND (%(form)s::text IS NULL OR form_id = %(form)s::text)
    AND (%(after_at)s::timestamptz IS NULL
         OR (submitted_at, response_id) > (%(after_at)s::timestamptz, %(after_id)s::uuid))
"""
# One page in one scan: the rows after the page's first key up to its last, in index order. Each cell is
# computed where it is formatted (a subquery that computed it once cost more than computing it again).
_PAGE_SELECT = sql.SQL(
    f"""
    SELECT {{cells}} FROM responses
    WHERE {_IN_RANGE_AFTER_KEY}
    AND (%(upto_at)s::timestamptz IS NULL
         OR (submitted_at, response_id) <= (%(upto_at)s::timestamptz, %(upto_id)s::uuid))
    ORDER BY submitted_at, response_id
    """
)
# Where the page starting after the key ends: the key of its `rows`-th row (none when fewer are left).
# (Aliased: ORDER BY on an output column named submitted_at, as the cast's would be, sorts the text.)
_PAGE_END = f"""
    SELECT submitted_at::text AS end_at, response_id::text AS end_id FROM responses
    WHERE {_IN_RANGE_AFTER_KEY}
    ORDER BY submitted_at, response_id OFFSET %(skip)s LIMIT 1
"""
# The organization's answer layouts made since the last one the export knows of (usually none).
_NEW_LAYOUTS = "SELECT id, questions FROM answer_layouts WHERE organization_id = %s AND id > %s ORDER BY id"
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


def page_select(columns: list[str], layouts: list[list]) -> sql.Composed:
    """The SELECT of one page's CSV rows (after the key %(after_at)s, %(after_id)s, up to %(upto_at)s, %(upto_id)s):
    the fixed columns, then `columns` as `layouts` ([layout id, [1-based position of each column or None]])
    place them in the answers arrays."""
    cells = [sql.SQL("response_id"), _safe_stored_cell(sql.SQL("form_id")), _SUBMITTED_AT_UTC]
    cells += [_safe_stored_cell(_answer_cell(i, layouts)) for i in range(len(columns))]
    return _PAGE_SELECT.format(cells=sql.SQL(", ").join(cells))


def _answer_cell(column: int, layouts: list[list]) -> sql.Composable:
    """Column `column`'s cell: a CASE on the row's layout (an integer comparison per layout that has the
    column; a join to the layouts would cost the planner its index-ordered LIMIT) and one subscript."""
    branches = [sql.SQL(" WHEN {} THEN answers[{}]").format(sql.Literal(layout), sql.Literal(positions[column]))
                for layout, positions in layouts if positions[column] is not None]
    if not branches:
        return sql.SQL("NULL::text")
    return sql.SQL("CASE layout_id{} END").format(sql.Composed(branches))


def known_layouts(cur, organization_id, columns: list[str], checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint with the organization's layouts made since it was written added to "layouts" (those
    holding any of `columns`), "layouts_seen" the last layout id looked at."""
    cur.execute(_NEW_LAYOUTS, (organization_id, checkpoint.get("layouts_seen", 0)))
    found = cur.fetchall()
    if not found:
        return checkpoint
    layouts = list(checkpoint.get("layouts", []))
    for layout in found:
        where = {name: i for i, name in enumerate(layout["questions"], start=1)}
        positions = [where.get(name) for name in columns]
        if any(position is not None for position in positions):
            layouts.append([layout["id"], positions])
    return {**checkpoint, "layouts": layouts, "layouts_seen": found[-1]["id"]}


def bind(cur, statement: sql.Composable, params: dict[str, Any]) -> str:
    """`statement` with its parameters bound on the client, exactly as execute() would (COPY takes no
    bind parameters)."""
    return cur.mogrify(statement, {**params, **_FORMULA_PARAMS}).decode()


def question_columns(forms: list[dict[str, Any]]) -> list[str]:
    """Each form's questions in its order, the forms in the given order, each question once."""
    return list(dict.fromkeys(question for form in forms for question in form["questions"]))


class ExportJob:
    """Exports one range, `batch_rows` responses a batch (`parallel` pages read at once). The columns are
    fixed by the first batch and kept in the checkpoint, so a resumed export writes the same columns
    whatever uploads came since."""

    def __init__(self, db, batch_rows: int, parallel: int = 2) -> None:
        self.db = db
        self.batch_rows = batch_rows
        self.parallel = parallel
        self._pages: PageReader | None = None

    def _range(self, task: Task, after: Key | None, upto: Key | None = None) -> dict[str, Any]:
        after, upto = after or [None, None], upto or [None, None]
        params = task.params
        return {
            "org": task.organization_id, "from": params["submitted_from"], "to": params["submitted_to"],
            "form": params.get("form_id"), "after_at": after[0], "after_id": after[1],
            "upto_at": upto[0], "upto_id": upto[1],
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
        # The batch's own statements (columns, header, layouts, storing) format no time: only the pages
        # run with _OUTPUT_SETTINGS, on their reader connections.
        if checkpoint is None:
            checkpoint = self._start(cur, task)
        columns = checkpoint["columns"]
        checkpoint = known_layouts(cur, task.organization_id, columns, checkpoint)
        statement = _COPY_CSV.format(page_select(columns, checkpoint.get("layouts", []))).as_string(cur)

        def probe(reader, after: Key | None) -> Key | None:
            reader.execute(_PAGE_END, {**self._range(task, after), "skip": self.batch_rows - 1})
            end = reader.fetchone()
            return None if end is None else list(end)

        if self._pages is None:
            self._pages = PageReader(self.db.connect, self.parallel, _PAGE_SETTINGS)
        page = self._pages.next(checkpoint["after"], statement, probe,
                                lambda bounds: {**self._range(task, bounds.after, bounds.upto), **_FORMULA_PARAMS})
        rows, size = checkpoint["rows"] + page.rows, checkpoint["bytes"]
        size = storage.append(cur, checkpoint["file_id"], page.data, size)
        finished = page.bounds.upto is None
        new = {**checkpoint, "after": page.bounds.upto, "rows": rows, "bytes": size}
        result = {"rows": rows, "bytes": size, "download": download_path(task.id)} if finished else None
        return Batch(checkpoint=new, done=rows, total=checkpoint["total"], finished=finished, result=result,
                     rows=page.rows, bytes=size - checkpoint["bytes"])

    def rollback(self, cur, task: Task) -> None:
        """An export's only effect is its file: deleted here too, so that a failed export leaves none."""
        storage.delete_task_files(cur, task.id)

    def close(self) -> None:
        """Stop reading ahead: the run has ended (or retries from its checkpoint)."""
        if self._pages is not None:
            self._pages.close()
            self._pages = None
