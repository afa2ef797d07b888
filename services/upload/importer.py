"""The upload job: stream the stored CSV from its checkpoint and COPY each batch of rows into responses."""

from __future__ import annotations

import csv
import io
import json
import uuid
from typing import Any

from services.upload.csv_format import (
    BadHeader,
    CsvStream,
    Header,
    parse_response_id,
    parse_submitted_at,
    read_header,
)
from shared import storage
from shared.batch_runner import Batch, TaskFailed
from shared.tasks import Task

MAX_REJECTIONS_KEPT = 100

_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS upload_staging (
    response_id uuid NOT NULL, form_id text NOT NULL, submitted_at timestamptz NOT NULL, answers jsonb NOT NULL
) ON COMMIT DELETE ROWS
"""
_COPY_STAGING = "COPY upload_staging (response_id, form_id, submitted_at, answers) FROM STDIN WITH (FORMAT csv)"
# ON CONFLICT DO NOTHING also skips a response_id repeated within the same batch.
_INSERT_FROM_STAGING = """
INSERT INTO responses (organization_id, response_id, form_id, submitted_at, answers, upload_task_id)
SELECT %(org)s, response_id, form_id, submitted_at, answers, %(task)s FROM upload_staging
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


def upload_file_id(task: Task) -> uuid.UUID:
    return uuid.UUID(task.params["file_id"])


class UploadJob:
    """Imports one uploaded file. Keeps its read position between batches of the same run."""

    def __init__(self, db, batch_rows: int) -> None:
        self.db = db
        self.batch_rows = batch_rows
        self._stream: CsvStream | None = None
        self._records = None

    def _open(self, task: Task, offset: int, line: int):
        if self._stream is None or self._stream.offset != offset:
            reader = storage.ChunkReader(self.db, upload_file_id(task), offset)
            self._stream = CsvStream(io.BufferedReader(reader, storage.CHUNK_BYTES), offset, line)
            self._records = self._stream.records()
        return self._records

    def _start(self, task: Task) -> dict[str, Any]:
        head = next(storage.iter_chunks(self.db, upload_file_id(task)), b"")
        try:
            header, offset = read_header(head)
        except BadHeader as exc:
            raise TaskFailed("bad_header", str(exc)) from None
        return {
            "offset": offset, "line": 1, "columns": list(header.columns),
            "rows_inserted": 0, "rows_skipped_duplicate": 0, "rows_rejected": 0, "rejections": [],
        }

    def run_batch(self, cur, task: Task, checkpoint: dict[str, Any] | None) -> Batch:
        if checkpoint is None:
            checkpoint = self._start(task)
        header = Header.parse(checkpoint["columns"])
        records = self._open(task, checkpoint["offset"], checkpoint["line"])
        rejections = list(checkpoint["rejections"])
        rejected = 0
        staged = io.StringIO()
        write = csv.writer(staged).writerow
        questions_seen: dict[str, set[str]] = {}
        staged_rows = 0
        finished = False
        width = len(header.columns)
        rid, fid, sat, questions = header.response_id, header.form_id, header.submitted_at, header.questions
        for line, row in records:
            reason = None
            if isinstance(row, str):
                reason = row
            elif not row:
                continue
            elif len(row) != width:
                reason = f"expected {width} columns, found {len(row)}"
            else:
                response_id = parse_response_id(row[rid])
                submitted_at = parse_submitted_at(row[sat])
                form_id = row[fid].strip()
                if response_id is None:
                    reason = f"response_id {row[rid]!r} is not a UUID"
                elif not form_id:
                    reason = "form_id is empty"
                elif submitted_at is None:
                    reason = f"submitted_at {row[sat]!r} is not an ISO-8601 date-time"
            if reason is not None:
                rejected += 1
                if len(rejections) < MAX_REJECTIONS_KEPT:
                    rejections.append({"line": line, "reason": reason})
            else:
                answers = {name: row[i] for i, name in questions if row[i]}
                seen = questions_seen.setdefault(form_id, set())
                if not seen.issuperset(answers):
                    seen.update(answers)
                write((response_id, form_id, submitted_at.isoformat(),
                       json.dumps(answers, ensure_ascii=False, separators=(",", ":"))))
                staged_rows += 1
            if staged_rows + rejected >= self.batch_rows:
                break
        else:
            finished = True

        inserted = 0
        if staged_rows:
            cur.execute(_CREATE_STAGING)
            staged.seek(0)
            cur.copy_expert(_COPY_STAGING, staged)
            cur.execute(_INSERT_FROM_STAGING, {"org": task.organization_id, "task": task.id})
            inserted = cur.rowcount
            for form_id, seen in questions_seen.items():
                ordered = [name for _, name in questions if name in seen]
                cur.execute(_REMEMBER_QUESTIONS, {"org": task.organization_id, "form": form_id,
                                                  "questions": ordered})
        stream = self._stream
        new = {
            **checkpoint,
            "offset": stream.offset,
            "line": stream.line,
            "rows_inserted": checkpoint["rows_inserted"] + inserted,
            "rows_skipped_duplicate": checkpoint["rows_skipped_duplicate"] + staged_rows - inserted,
            "rows_rejected": checkpoint["rows_rejected"] + rejected,
            "rejections": rejections,
        }
        file_size = task.params["size_bytes"]
        result = None
        if finished:
            result = {key: new[key] for key in
                      ("rows_inserted", "rows_skipped_duplicate", "rows_rejected", "rejections")}
        return Batch(checkpoint=new, done=stream.offset, total=file_size, finished=finished, result=result)

    def rollback(self, cur, task: Task) -> None:
        cur.execute(_DELETE_INSERTED, (task.organization_id, task.id))

