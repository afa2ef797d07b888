"""The upload job: stream the stored CSV from its checkpoint and COPY each batch of rows into responses.

Speed comes from three things: rows are parsed and encoded for COPY in a read-ahead thread while the
previous batch is in PostgreSQL; each batch goes straight into `responses` with one COPY (only a batch
that meets an existing response id takes the slower INSERT ... ON CONFLICT path); and batches commit
without waiting for the WAL flush (a batch lost in a server crash is lost together with its checkpoint,
so it is simply redone).
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg2.errors

from services.upload.csv_format import (
    BadHeader,
    CsvStream,
    Header,
    parse_response_id,
    parse_submitted_at,
    read_header,
    timestamp_for_copy,
)
from shared import storage
from shared.batch_runner import Batch, TaskFailed
from shared.formula_cells import may_hold_formula
from shared.read_ahead import ReadAhead
from shared.tasks import Task

MAX_REJECTIONS_KEPT = 100
# A resumed run's first batch holds this fraction of UPLOAD_BATCH_ROWS (see UploadJob._next_parsed).
FIRST_BATCH_FRACTION = 100
COLUMNS = ("organization_id, response_id, form_id, submitted_at, answers, layout_id, upload_task_id, "
           "may_hold_formula")

_COPY_RESPONSES = f"COPY responses ({COLUMNS}) FROM STDIN"
# Fallback when another upload inserted some of the same ids after they were looked up.
_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS upload_staging (LIKE responses INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
"""
_COPY_STAGING = f"COPY upload_staging ({COLUMNS}) FROM STDIN"
_INSERT_FROM_STAGING = f"""
INSERT INTO responses ({COLUMNS}) SELECT {COLUMNS} FROM upload_staging
ON CONFLICT (organization_id, response_id) DO NOTHING
"""
# Appends the questions a form did not know yet, keeping the order of first appearance.
_REMEMBER_QUESTIONS = """
INSERT INTO forms (organization_id, form_id, questions) VALUES (%(org)s, %(form)s, %(questions)s)
ON CONFLICT (organization_id, form_id) DO UPDATE SET questions = forms.questions || ARRAY(
    SELECT q FROM unnest(EXCLUDED.questions) WITH ORDINALITY AS u(q, i)
    WHERE NOT q = ANY(forms.questions) ORDER BY i)
WHERE NOT EXCLUDED.questions <@ forms.questions
"""
_DELETE_INSERTED = "DELETE FROM responses WHERE organization_id = %s AND upload_task_id = %s"
# A file's question columns, in its order, are the layout of its rows' answers arrays: the same header
# finds the layout an earlier upload made (two racing uploads may make two equal layouts: harmless).
_FIND_LAYOUT = "SELECT min(id) AS id FROM answer_layouts WHERE organization_id = %s AND questions = %s::text[]"
_CREATE_LAYOUT = "INSERT INTO answer_layouts (organization_id, questions) VALUES (%s, %s::text[]) RETURNING id"



def _copy_text(value: str) -> str:
    """Escape a value for COPY's text format."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _array_element(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' if value else "NULL"


def answers_array(values: list[str]) -> str:
    """The text[] literal of a row's answers, an empty answer as NULL (not yet escaped for COPY)."""
    together = "".join(values)
    if '"' in together or "\\" in together:
        return "{" + ",".join([_array_element(value) for value in values]) + "}"
    # No answer holds a quote, so "" can only be an empty answer: two joins and one replace for the row.
    return ('{"' + '","'.join(values) + '"}').replace('""', "NULL") if values else "{}"


@dataclass
class ParsedBatch:
    """The next batch of rows, validated and encoded as COPY text lines (UTF-8)."""

    start_offset: int
    end_offset: int = 0
    end_line: int = 0
    ids: list[str] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    size: int = 0
    repeated_in_batch: int = 0
    rejected: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)
    # Forms that got answers to questions they had none for yet in this run: those questions, in order.
    questions_seen: dict[str, list[str]] = field(default_factory=dict)
    finished: bool = False


# What remembering which questions each form has had answered may cost (about 300 bytes a form and 40 a
# question): past it the memory is forgotten, which only means sending some questions to PostgreSQL again.
_FORM_TRACKING_BYTES = 32 * 1024 * 1024


def _shown(value: str) -> str:
    """A cell quoted in a rejection reason, cut short: a reason must stay small whatever the cell holds."""
    return repr(value if len(value) <= 60 else value[:60] + "…")


def _checked(row: list[str] | str, width: int, rid: int, fid: int, sat: int
             ) -> tuple[str | None, str | None, str, datetime | None]:
    """Why the record cannot be imported (None when it can), with its response id, form id and submission
    time when they parse. A `str` record is the CSV reader's reason it could not read the record."""
    if isinstance(row, str):
        return row, None, "", None
    if len(row) != width:
        return f"expected {width} columns, found {len(row)}", None, "", None
    response_id = parse_response_id(row[rid])
    submitted_at = parse_submitted_at(row[sat])
    form_id = row[fid].strip()
    if response_id is None:
        return f"response_id {_shown(row[rid])} is not a UUID", None, form_id, submitted_at
    if not form_id:
        return "form_id is empty", response_id, form_id, submitted_at
    if submitted_at is None:
        return f"submitted_at {_shown(row[sat])} is not an ISO-8601 date-time", response_id, form_id, None
    return None, response_id, form_id, submitted_at


class _Unanswered(dict[str, set[int]]):
    """Per form, the question positions no row of it has answered yet; forgotten whole when remembering it
    would cost more than _FORM_TRACKING_BYTES (about 300 bytes a form and 40 a question)."""

    def __init__(self, question_index: list[int]) -> None:
        super().__init__()
        self._questions = question_index
        self._cost = 300 + 40 * len(question_index)
        self._tracked = 0

    def start(self, form_id: str) -> set[int]:
        """Start remembering a form not seen yet: none of its questions answered."""
        if self._tracked + self._cost > _FORM_TRACKING_BYTES:
            self.clear()
            self._tracked = 0
        self._tracked += self._cost
        waiting = self[form_id] = set(self._questions)
        return waiting


# The may_hold_formula column's COPY text, and the line's end.
_MARK = {True: "t\n", False: "f\n"}


def _in_submission_order(lines: list[bytes], moments: list[float]) -> list[bytes]:
    """The batch's rows ordered by submission time, so that they are stored together on disk as exports
    and time-range reads find them: an export page then reads runs of neighbouring heap pages instead of one
    page per row. (A batch already in submission order costs one pass.)"""
    order = sorted(range(len(lines)), key=moments.__getitem__)
    return [lines[i] for i in order]


def parse_batches(stream: CsvStream, header: Header, limits: BatchLimits, organization_id, task_id,
                  layout_id: int = 0, first_rows: int | None = None,
                  stopped: Callable[[], bool] | None = None) -> Iterator[ParsedBatch]:
    """Cut the stream into batches of `limits.rows` records (valid or not; the first batch `first_rows`
    when given), or fewer whose COPY data reaches `limits.bytes` bytes. Each row's answers follow `header`'s
    question order (its layout). Ends, mid-batch and without yielding it, soon after `stopped()` is true."""
    rid, fid, sat = header.response_id, header.form_id, header.submitted_at
    question_index = [i for i, _ in header.questions]
    width = len(header.columns)
    prefix, suffix = f"{organization_id}\t", f"\t{layout_id}\t{task_id}\t"
    records = stream.records()
    unanswered = _Unanswered(question_index)
    rows_limit = first_rows or limits.rows
    while True:
        batch = ParsedBatch(start_offset=stream.offset)
        seen_ids: set[str] = set()
        newly_answered: dict[str, set[int]] = {}
        moments: list[float] = []
        count = size = 0
        for line, row in records:
            # A run that ends (paused, revoked) must not wait for a whole batch to be parsed for nothing.
            if stopped is not None and not count % 1024 and stopped():
                return
            if not row and not isinstance(row, str):  # a blank line (an unreadable record is a str reason)
                continue
            reason, response_id, form_id, submitted_at = _checked(row, width, rid, fid, sat)
            count += 1
            if reason is not None:
                batch.rejected += 1
                if len(batch.rejections) < MAX_REJECTIONS_KEPT:
                    batch.rejections.append({"line": line, "reason": reason})
            elif response_id in seen_ids:
                batch.repeated_in_batch += 1
            else:
                seen_ids.add(response_id)
                waiting = unanswered.get(form_id)
                if waiting is None and question_index:
                    waiting = unanswered.start(form_id)
                if waiting:
                    answered = {i for i in waiting if row[i]}
                    if answered:
                        waiting -= answered
                        newly_answered.setdefault(form_id, set()).update(answered)
                answers = answers_array([row[i] for i in question_index])
                encoded = (f"{prefix}{response_id}\t{_copy_text(form_id)}\t{timestamp_for_copy(row[sat], submitted_at)}"
                           f"\t{_copy_text(answers)}{suffix}{_MARK[may_hold_formula(form_id, answers)]}").encode()
                batch.ids.append(response_id)
                batch.lines.append(encoded)
                moments.append(submitted_at.timestamp())
                size += len(encoded)
            if count >= rows_limit or size >= limits.bytes:
                break
        else:
            batch.finished = True
        for form_id, positions in newly_answered.items():
            batch.questions_seen[form_id] = [name for i, name in header.questions if i in positions]
        batch.size = size
        batch.lines = _in_submission_order(batch.lines, moments)
        batch.end_offset, batch.end_line = stream.offset, stream.line
        rows_limit = limits.rows
        yield batch
        if batch.finished:
            return


def answer_layout(cur, organization_id, header: Header) -> int:
    """The id of the layout of `header`'s question columns (made when the organization has none yet)."""
    questions = [name for _, name in header.questions]
    cur.execute(_FIND_LAYOUT, (organization_id, questions))
    found = cur.fetchone()["id"]
    if found is not None:
        return found
    cur.execute(_CREATE_LAYOUT, (organization_id, questions))
    return cur.fetchone()["id"]


def upload_file_id(task: Task) -> uuid.UUID:
    return uuid.UUID(task.params["file_id"])


@dataclass(frozen=True)
class BatchLimits:
    """What one batch may hold: `rows` records, or rows whose COPY data takes `bytes` bytes, whichever comes
    first. A row longer than `bytes` in the file, or with a field longer than `field_bytes`, is rejected."""

    rows: int
    bytes: int
    field_bytes: int

    @classmethod
    def from_settings(cls, settings) -> BatchLimits:
        return cls(settings.upload_batch_rows, settings.upload_batch_bytes, settings.max_field_bytes)


# COPY reads a batch's lines in pieces of about this size: never the whole batch joined into one buffer
# (up to UPLOAD_BATCH_BYTES, allocated and freed for every batch), and a stop request reaches the thread
# between pieces, while the batch is still being sent.
_COPY_READ_BYTES = 256 * 1024


class _LinesReader:
    """A file-like object that COPY reads a batch's encoded lines from, about `size` bytes a call."""

    def __init__(self, lines: list[bytes]) -> None:
        self._lines = lines
        self._next = 0

    def read(self, size: int = -1) -> bytes:
        lines, start = self._lines, self._next
        end, taken = start, 0
        while end < len(lines) and (size < 0 or taken < size):
            taken += len(lines[end])
            end += 1
        self._next = end
        return b"".join(lines[start:end])


class UploadJob:
    """Imports one uploaded file. Parses ahead of the database in a background thread during a run."""

    def __init__(self, db, limits: BatchLimits) -> None:
        self.db = db
        self.limits = limits
        self._batches: ReadAhead[ParsedBatch] | None = None
        self._closing = threading.Event()

    def _start(self, cur, task: Task) -> dict[str, Any]:
        # Read with the batch's cursor: a stop request may interrupt this thread at any instruction, and one
        # landing inside the connection pool's lock would leave the lock held.
        head = storage.first_chunk(cur, upload_file_id(task))
        try:
            header, offset = read_header(head)
        except BadHeader as exc:
            raise TaskFailed("bad_header", str(exc)) from None
        return {
            "offset": offset, "line": 1, "columns": list(header.columns),
            "layout_id": answer_layout(cur, task.organization_id, header),
            "rows_inserted": 0, "rows_skipped_duplicate": 0, "rows_rejected": 0, "rejections": [],
        }

    def _next_parsed(self, task: Task, checkpoint: dict[str, Any]) -> ParsedBatch:
        if self._batches is not None:
            parsed = next(self._batches)
            if parsed.start_offset == checkpoint["offset"]:
                return parsed
            self.close()
        reader = storage.ChunkReader(self.db, upload_file_id(task), checkpoint["offset"])
        stream = CsvStream(io.BufferedReader(reader, storage.CHUNK_BYTES), checkpoint["offset"], checkpoint["line"],
                           max_record_bytes=self.limits.bytes, max_field_bytes=self.limits.field_bytes,
                           column_names=checkpoint["columns"])
        # A resumed run's first batch is small: the upload shows progress again at once, before its parser
        # and COPY are up to speed. (A new upload's first batch is a full one.)
        resumed = checkpoint["line"] > 1
        self._closing = threading.Event()
        source = parse_batches(stream, Header.parse(checkpoint["columns"]), self.limits,
                               task.organization_id, task.id, checkpoint["layout_id"],
                               first_rows=max(1, self.limits.rows // FIRST_BATCH_FRACTION) if resumed else None,
                               stopped=self._closing.is_set)
        self._batches = ReadAhead(source, depth=2)
        return next(self._batches)

    def run_batch(self, cur, task: Task, checkpoint: dict[str, Any] | None) -> Batch:
        if checkpoint is None:
            checkpoint = self._start(cur, task)
        elif "layout_id" not in checkpoint:  # a task checkpointed before answers had layouts
            header = Header.parse(checkpoint["columns"])
            checkpoint = {**checkpoint, "layout_id": answer_layout(cur, task.organization_id, header)}
        parsed = self._next_parsed(task, checkpoint)
        cur.execute("SET LOCAL synchronous_commit = off; SET LOCAL TimeZone = 'UTC'")
        inserted = self._insert(cur, task, parsed) if parsed.lines else 0
        for form_id, questions in parsed.questions_seen.items():
            cur.execute(_REMEMBER_QUESTIONS, {"org": task.organization_id, "form": form_id, "questions": questions})
        rejections = checkpoint["rejections"]
        if len(rejections) < MAX_REJECTIONS_KEPT and parsed.rejections:
            rejections = (rejections + parsed.rejections)[:MAX_REJECTIONS_KEPT]
        new = {
            **checkpoint,
            "offset": parsed.end_offset,
            "line": parsed.end_line,
            "rows_inserted": checkpoint["rows_inserted"] + inserted,
            "rows_skipped_duplicate": (checkpoint["rows_skipped_duplicate"] + parsed.repeated_in_batch
                                       + len(parsed.lines) - inserted),
            "rows_rejected": checkpoint["rows_rejected"] + parsed.rejected,
            "rejections": rejections,
        }
        result = None
        if parsed.finished:
            result = {key: new[key] for key in
                      ("rows_inserted", "rows_skipped_duplicate", "rows_rejected", "rejections")}
            # The SHA-256 of the imported file, computed by the gateway as it stored the file.
            result["sha256"] = task.params.get("sha256")
        return Batch(checkpoint=new, done=parsed.end_offset, total=task.params["size_bytes"],
                     finished=parsed.finished, result=result,
                     rows=len(parsed.lines) + parsed.repeated_in_batch + parsed.rejected,
                     bytes=parsed.end_offset - parsed.start_offset)

    def _insert(self, cur, task: Task, parsed: ParsedBatch) -> int:
        """COPY the batch's rows into responses; returns how many were inserted.

        The fast path is one COPY straight into the table. Only when a response id already exists does
        the batch go again through a staging table and INSERT ... ON CONFLICT DO NOTHING."""
        cur.execute("SAVEPOINT upload_copy")
        try:
            cur.copy_expert(_COPY_RESPONSES, _LinesReader(parsed.lines), size=_COPY_READ_BYTES)
        except psycopg2.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT upload_copy")
            cur.execute(_CREATE_STAGING)
            cur.copy_expert(_COPY_STAGING, _LinesReader(parsed.lines), size=_COPY_READ_BYTES)
            cur.execute(_INSERT_FROM_STAGING)
            return cur.rowcount
        cur.execute("RELEASE SAVEPOINT upload_copy")
        return len(parsed.lines)

    def rollback(self, cur, task: Task) -> None:
        cur.execute(_DELETE_INSERTED, (task.organization_id, task.id))

    def close(self) -> None:
        if self._batches is not None:
            self._closing.set()
            self._batches.close()
            self._batches = None
