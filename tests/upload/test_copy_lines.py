"""The COPY lines of an upload: each row encoded exactly as the general parsers read it, whichever spelling of a
response id, form id or time it uses (the encoder takes a shortcut for the common spellings)."""

from __future__ import annotations

import csv
import io
import uuid

import pytest

from services.upload.copy_lines import BatchLimits, answers_array, parse_batches
from services.upload.csv_format import (
    CsvStream,
    parse_response_id,
    parse_submitted_at,
    read_header,
    timestamp_for_copy,
)
from shared.formula_cells import may_hold_formula

ORG, TASK = uuid.UUID(int=1), uuid.UUID(int=2)
ID = "6F9619FF-8B86-D011-B42D-00C04FC964FF"
SPELLINGS = [
    # (response_id, form_id, submitted_at, q1, q2)
    (ID, "f", "2024-03-01T10:00:00Z", "a", ""),
    (ID.lower(), " f\t", "2024-03-01 10:00:00.123456+05:30", "", '"quoted", \\ back'),
    ("{" + ID + "}", "f\\g", " 2024-03-01T10:00 ", "=1+1", "x"),
    (ID.replace("-", ""), "=form", "2024-03-01", "multi\nline", " -3"),
    (f"urn:uuid:{ID}", "f", "2024-03-01T10:00:00-0800", "\ttab", "ok"),
    (f" {ID} ", "f", "2024-W09-5T10:00:00", "नमस्ते", "＝1"),
    (ID, "f", "20240301T100000Z", 'said "=1"', "e,=f"),
]
REFUSED = [
    ("not-a-uuid", "f", "2024-03-01", "a", "b"),
    (ID, "  ", "2024-03-01", "a", "b"),
    (ID, "f", "2024-03-01T24:00:00Z", "a", "b"),
    (ID, "f", "2024-02-30", "a", "b"),
    (ID, "f", "yesterday", "a", "b"),
]


def reference_line(row: tuple[str, ...]) -> bytes:
    """The COPY line as the general parsers make it, one field at a time."""
    response_id, form_id, submitted_at = parse_response_id(row[0]), row[1].strip(), parse_submitted_at(row[2])
    answers = answers_array(list(row[3:]))
    escape = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
    mark = "t" if may_hold_formula(form_id, answers) else "f"
    return (f"{ORG}\t{response_id}\t{form_id.translate(escape)}\t{timestamp_for_copy(row[2], submitted_at)}\t"
            f"{answers.translate(escape)}\t7\t{TASK}\t{mark}\n").encode()


def batch_of(rows) -> tuple:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["response_id", "form_id", "submitted_at", "q1", "q2"])
    writer.writerows(rows)
    data = out.getvalue().encode()
    header, offset = read_header(data)
    stream = CsvStream(io.BytesIO(data[offset:]), offset, 1)
    return next(parse_batches(stream, header, BatchLimits(100, 1 << 20, 1 << 20), ORG, TASK, layout_id=7))


@pytest.mark.parametrize("row", SPELLINGS, ids=range(len(SPELLINGS)))
def test_every_spelling_of_a_row_is_encoded_as_the_general_parsers_read_it(row):
    batch = batch_of([row])
    assert batch.rejected == 0
    assert batch.data == reference_line(row)
    assert batch.ids == [parse_response_id(row[0])]


@pytest.mark.parametrize("row", REFUSED, ids=range(len(REFUSED)))
def test_a_row_the_general_parsers_refuse_is_rejected_with_its_reason(row):
    batch = batch_of([row])
    assert (batch.rejected, batch.data, batch.ids) == (1, b"", [])
    reason = batch.rejections[0]["reason"]
    assert reason.split()[0] in ("response_id", "form_id", "submitted_at"), reason


def test_a_form_s_questions_are_reported_once_each_in_the_file_s_order_as_rows_answer_them():
    ids = [str(uuid.UUID(int=n)) for n in range(10, 15)]
    batch = batch_of([
        (ids[0], "f", "2024-01-01", "", ""),
        (ids[1], "f", "2024-01-01", "", "b"),
        (ids[2], "g", "2024-01-01", "a", ""),
        (ids[3], "f", "2024-01-01", "a", "b"),
        (ids[3], "h", "2024-01-01", "a", "b"),  # repeats an id of this batch: not stored, answers nothing
    ])
    assert batch.questions_seen == {"f": ["q1", "q2"], "g": ["q1"]}
    assert batch.repeated_in_batch == 1
