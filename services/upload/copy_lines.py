"""An upload's rows, from CSV records to COPY lines: each record checked (a rejected one keeps its line and
reason), its answers encoded as a text[] literal in the file's question order, its row marked when a cell may
be a formula, and the records cut into batches bounded by rows and by bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.upload.csv_format import CsvStream, Header, parse_response_id, parse_submitted_at, timestamp_for_copy
from shared.formula_cells import may_hold_formula

MAX_REJECTIONS_KEPT = 100


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
    """The next batch of rows, validated and encoded as COPY text (UTF-8), one line a row: one buffer, not a
    bytes object a row (those would be a batch's worth of small allocations left to fragment the heap)."""

    start_offset: int
    end_offset: int = 0
    end_line: int = 0
    ids: list[str] = field(default_factory=list)
    data: bytes = b""
    repeated_in_batch: int = 0
    rejected: int = 0
    rejections: list[dict[str, Any]] = field(default_factory=list)
    # Forms that got answers to questions they had none for yet in this run: those questions, in order.
    questions_seen: dict[str, list[str]] = field(default_factory=dict)
    finished: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def lines(self) -> list[bytes]:
        """The COPY lines (a value's own line breaks are escaped in COPY text, so each row is one line)."""
        return self.data.splitlines(keepends=True)


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


def _in_submission_order(lines: list[bytes], moments: list[float]) -> bytes:
    """The batch's lines ordered by submission time and joined (`lines` is emptied), so that its rows are
    stored together on disk as exports and time-range reads find them: an export page then reads runs of
    neighbouring heap pages instead of one page per row. (A batch already in submission order costs one
    pass.)"""
    order = sorted(range(len(lines)), key=moments.__getitem__)
    data = b"".join([lines[i] for i in order])
    lines.clear()
    return data


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
        lines: list[bytes] = []
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
                lines.append(encoded)
                moments.append(submitted_at.timestamp())
                size += len(encoded)
            if count >= rows_limit or size >= limits.bytes:
                break
        else:
            batch.finished = True
        for form_id, positions in newly_answered.items():
            batch.questions_seen[form_id] = [name for i, name in header.questions if i in positions]
        batch.data = _in_submission_order(lines, moments)
        batch.end_offset, batch.end_line = stream.offset, stream.line
        rows_limit = limits.rows
        yield batch
        if batch.finished:
            return


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
