"""An upload's rows, from CSV records to COPY lines: each record checked (a rejected one keeps its line and
reason), its answers encoded as a text[] literal in the file's question order, its row marked when a cell may
be a formula, and the records cut into batches bounded by rows and by bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from operator import itemgetter
from typing import Any

from services.upload.csv_format import (
    CsvStream,
    Header,
    parse_response_id,
    parse_submitted_at,
    submitted_at_for_copy,
)
from shared.formula_cells import FIRST_CHARACTERS, answers_may_hold_formula

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

    @cached_property
    def id_set(self) -> set[str]:
        """The batch's response ids as a set (made once: a batch is compared with the one before and after)."""
        return set(self.ids)

    @property
    def size(self) -> int:
        return len(self.data)


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


class _Unanswered(dict[str, tuple[tuple[int, ...], Any]]):
    """Per form, the question positions no row of it has answered yet, with an itemgetter of those cells (a
    row answers none of them, the common case, when all it gets are empty); forgotten whole when remembering
    it would cost more than _FORM_TRACKING_BYTES (about 300 bytes a form and 40 a question)."""

    def __init__(self, question_index: list[int]) -> None:
        super().__init__()
        self._questions = tuple(question_index)
        self._cost = 300 + 40 * len(question_index)
        self._tracked = 0

    def answered_by(self, form_id: str, row: list[str]) -> list[int]:
        """The positions of the form's questions that had no answer until this row."""
        waiting, cells = self.get(form_id) or self._start(form_id)
        if not waiting or not any(cells(row)):
            return []
        self[form_id] = self._waiting([i for i in waiting if not row[i]])
        return [i for i in waiting if row[i]]

    def _start(self, form_id: str) -> tuple[tuple[int, ...], Any]:
        """Start remembering a form not seen yet: none of its questions answered."""
        if self._tracked + self._cost > _FORM_TRACKING_BYTES:
            self.clear()
            self._tracked = 0
        self._tracked += self._cost
        entry = self[form_id] = self._waiting(self._questions)
        return entry

    @staticmethod
    def _waiting(positions) -> tuple[tuple[int, ...], Any]:
        # The first position twice, so that the getter returns a tuple even for one position.
        return tuple(positions), (itemgetter(positions[0], *positions) if positions else None)


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
    encoder = _RowEncoder(header, f"{organization_id}\t", f"\t{layout_id}\t{task_id}\t")
    records = stream.records()
    rows_limit = first_rows or limits.rows
    while True:
        batch = ParsedBatch(start_offset=stream.offset)
        seen_ids = batch.id_set  # kept in step with batch.ids below: the set is made once, here
        moments: list[float] = []
        lines: list[bytes] = []
        count = size = 0
        for line, row in records:
            # A run that ends (paused, revoked) must not wait for a whole batch to be parsed for nothing.
            if stopped is not None and not count % 1024 and stopped():
                return
            if not row and not isinstance(row, str):  # a blank line (an unreadable record is a str reason)
                continue
            count += 1
            encoded = encoder.encode(row) if not isinstance(row, str) else None
            if encoded is None:
                batch.rejected += 1
                if len(batch.rejections) < MAX_REJECTIONS_KEPT:
                    batch.rejections.append({"line": line, "reason": encoder.reason(row)})
            elif encoded[0] in seen_ids:
                batch.repeated_in_batch += 1
            else:
                response_id, form_id, moment, data = encoded
                seen_ids.add(response_id)
                encoder.note_answers(form_id, row)
                batch.ids.append(response_id)
                lines.append(data)
                moments.append(moment)
                size += len(data)
            if count >= rows_limit or size >= limits.bytes:
                break
        else:
            batch.finished = True
        batch.questions_seen = encoder.take_questions_seen()
        batch.data = _in_submission_order(lines, moments)
        batch.end_offset, batch.end_line = stream.offset, stream.line
        rows_limit = limits.rows
        yield batch
        if batch.finished:
            return


# How many distinct form id cells _RowEncoder keeps the encoding of (a file may name a new form on every row).
_FORMS_REMEMBERED = 4096


class _RowEncoder:
    """Checks a record and encodes it as a COPY line of `responses`. Per row only what differs from row to row
    is worked out: a form id cell's encoding is remembered (the other fields' parsers take the forms nearly
    every file uses first: csv_format)."""

    def __init__(self, header: Header, prefix: str, suffix: str) -> None:
        self._width = len(header.columns)
        self._rid, self._fid, self._sat = header.response_id, header.form_id, header.submitted_at
        self._header = header
        positions = [i for i, _ in header.questions]
        self._positions = positions
        self._answers = itemgetter(*positions) if len(positions) > 1 else (lambda row: [row[i] for i in positions])
        self._prefix, self._suffix = prefix, suffix
        self._forms: dict[str, tuple[str, str, bool]] = {}
        self._unanswered = _Unanswered(positions)
        self._newly_answered: dict[str, set[int]] = {}

    def encode(self, row: list[str]) -> tuple[str, str, float, bytes] | None:
        """(response id, form id, submission time as a sort key, COPY line), or None when the row cannot be
        imported."""
        if len(row) != self._width:
            return None
        response_id = parse_response_id(row[self._rid])
        form = self._forms.get(row[self._fid]) or self._form(row[self._fid])
        submitted_at = submitted_at_for_copy(row[self._sat])
        if response_id is None or form is None or submitted_at is None:
            return None
        text, moment = submitted_at
        answers = answers_array(self._answers(row))
        marked = form[2] or answers_may_hold_formula(answers)
        line = (f"{self._prefix}{response_id}\t{form[1]}\t{text}\t{_copy_text(answers)}{self._suffix}"
                f"{'t' if marked else 'f'}\n")
        return response_id, form[0], moment.timestamp(), line.encode()

    def _form(self, cell: str) -> tuple[str, str, bool] | None:
        form_id = cell.strip()
        if not form_id:
            return None
        if len(self._forms) >= _FORMS_REMEMBERED:
            self._forms.clear()
        form = self._forms[cell] = (form_id, _copy_text(form_id), form_id[0] in FIRST_CHARACTERS)
        return form

    def reason(self, row: list[str] | str) -> str:
        """Why a record encode() refused cannot be imported."""
        return _checked(row, self._width, self._rid, self._fid, self._sat)[0] or "the row cannot be imported"

    def note_answers(self, form_id: str, row: list[str]) -> None:
        """Remember which questions of the form the row (one that is stored) answered (see take_questions_seen)."""
        answered = self._unanswered.answered_by(form_id, row)
        if answered:
            self._newly_answered.setdefault(form_id, set()).update(answered)

    def take_questions_seen(self) -> dict[str, list[str]]:
        """The forms that got answers to questions they had none for yet since the last call: those questions,
        in the file's order."""
        seen = {form_id: [name for i, name in self._header.questions if i in positions]
                for form_id, positions in self._newly_answered.items()}
        self._newly_answered = {}
        return seen


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
