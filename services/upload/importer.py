"""The upload job: stream the stored CSV from its checkpoint and COPY each batch of rows into responses.

Speed comes from four things: rows are parsed and encoded for COPY (services/upload/copy_lines.py) in a
read-ahead thread while earlier batches are in PostgreSQL; each batch goes straight into `responses` with one
COPY (only a batch that meets an existing response id takes the slower INSERT ... ON CONFLICT path); up to
UPLOAD_COPY_STREAMS batches are written at once, each on its own connection, and commit in order
(shared/pipeline.py); and batches commit without waiting for the WAL flush (a batch lost in a server crash
is lost together with its checkpoint, so it is simply redone).
"""

from __future__ import annotations

import io
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg2.errors

from services.upload.copy_lines import MAX_REJECTIONS_KEPT, BatchLimits, ParsedBatch, parse_batches
from services.upload.csv_format import BadHeader, CsvStream, Header, read_header
from shared import storage
from shared.batches import Batch, TaskFailed
from shared.read_ahead import ReadAhead
from shared.tasks import Task

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


# COPY reads a batch's data in pieces of about this size: a stop request reaches the thread between pieces,
# while the batch is still being sent.
_COPY_READ_BYTES = 256 * 1024


@dataclass(frozen=True)
class PlannedBatch:
    """A parsed batch and where the batch after it starts (shared.batches.Planned)."""

    parsed: ParsedBatch
    position: dict[str, Any]
    # The answer layout a checkpoint from before layouts existed was given, to store with the batch.
    layout: dict[str, Any] = field(default_factory=dict)

    @property
    def last(self) -> bool:
        return self.parsed.finished

    def conflicts_with(self, earlier: PlannedBatch) -> bool:
        # The same response id in both: the later COPY would wait on the earlier batch's uncommitted key.
        return not self.parsed.id_set.isdisjoint(earlier.parsed.id_set)


class UploadJob:
    """Imports one uploaded file. Parses ahead of the database in a background thread during a run, and
    writes up to `streams` batches at once (shared/pipeline.py), each with a COPY of its own."""

    def __init__(self, db, limits: BatchLimits, streams: int = 1) -> None:
        self.db = db
        self.limits = limits
        self.streams = streams
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
        self._batches = ReadAhead(source, depth=1)
        return next(self._batches)

    def run_batch(self, cur, task: Task, checkpoint: dict[str, Any] | None) -> Batch:
        if checkpoint is None:
            checkpoint = self._start(cur, task)
        planned = self.plan(task, checkpoint)
        return self.settle(cur, task, checkpoint, self.write(cur, task, planned))

    def plan(self, task: Task, checkpoint: dict[str, Any]) -> PlannedBatch:
        layout = {}
        if "layout_id" not in checkpoint:  # a task checkpointed before answers had layouts
            with self.db.transaction() as cur:  # a layout row made for nothing is harmless, as with races
                header = Header.parse(checkpoint["columns"])
                layout = {"layout_id": answer_layout(cur, task.organization_id, header)}
            checkpoint = {**checkpoint, **layout}
        parsed = self._next_parsed(task, checkpoint)
        return PlannedBatch(parsed, {**checkpoint, "offset": parsed.end_offset, "line": parsed.end_line}, layout)

    def write(self, cur, task: Task, planned: PlannedBatch) -> tuple[PlannedBatch, int]:
        """COPY the batch's rows; returns the batch and how many rows were inserted."""
        cur.execute("SET LOCAL synchronous_commit = off; SET LOCAL TimeZone = 'UTC'")
        return planned, (self._insert(cur, task, planned.parsed) if planned.parsed.ids else 0)

    def settle(self, cur, task: Task, checkpoint: dict[str, Any], written: tuple[PlannedBatch, int]) -> Batch:
        planned, inserted = written
        parsed, checkpoint = planned.parsed, {**checkpoint, **planned.layout}
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
                                       + len(parsed.ids) - inserted),
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
                     rows=len(parsed.ids) + parsed.repeated_in_batch + parsed.rejected,
                     bytes=parsed.end_offset - parsed.start_offset)

    def _insert(self, cur, task: Task, parsed: ParsedBatch) -> int:
        """COPY the batch's rows into responses; returns how many were inserted.

        The fast path is one COPY straight into the table. Only when a response id already exists does
        the batch go again through a staging table and INSERT ... ON CONFLICT DO NOTHING."""
        cur.execute("SAVEPOINT upload_copy")
        try:
            cur.copy_expert(_COPY_RESPONSES, io.BytesIO(parsed.data), size=_COPY_READ_BYTES)
        except psycopg2.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT upload_copy")
            cur.execute(_CREATE_STAGING)
            cur.copy_expert(_COPY_STAGING, io.BytesIO(parsed.data), size=_COPY_READ_BYTES)
            cur.execute(_INSERT_FROM_STAGING)
            return cur.rowcount
        cur.execute("RELEASE SAVEPOINT upload_copy")
        return len(parsed.ids)

    def rollback(self, cur, task: Task) -> None:
        cur.execute(_DELETE_INSERTED, (task.organization_id, task.id))

    def close(self) -> None:
        if self._batches is not None:
            self._closing.set()
            self._batches.close()
            self._batches = None
