"""CsvStream: records, line numbers and byte offsets, whatever the block size."""

from __future__ import annotations

import io
from datetime import datetime

import pytest

from scripts.sample_data import csv_bytes
from services.upload.csv_format import BadHeader, CsvStream, read_header

TRICKY = (
    "\ufeffresponse_id,form_id,submitted_at,note\r\n"
    'a,f,2024-01-01,"line one\nline two, with ""quotes"""\r\n'
    "b,f,2024-01-01,Zoë 你好\n"
    'c,f,2024-01-01,"unclosed "quote" here\n'
    'd,f,2024-01-01,"a\n\nb\n\nc"\n'
    "e,f,2024-01-01,last"
).encode("utf-8")


def lines(batch) -> list[bytes]:
    """A batch's COPY lines (a value's own line breaks are escaped in COPY text, so each row is one line)."""
    return batch.data.splitlines(keepends=True)


def parse_all(data: bytes, block_size: int) -> tuple[list, list[int]]:
    """Every record, and the byte offset after each one."""
    stream = CsvStream(io.BytesIO(data), offset=0, line=0, block_size=block_size)
    records, offsets = [], []
    for record in stream.records():
        records.append(record)
        offsets.append(stream.offset)
    return records, offsets


@pytest.mark.parametrize("block_size", [1, 7, 64, 1 << 20])
def test_records_and_offsets_do_not_depend_on_block_size(block_size):
    records, offsets = parse_all(TRICKY, block_size)
    assert records == parse_all(TRICKY, 1 << 20)[0]
    assert [line for line, _ in records] == [1, 2, 4, 5, 6, 11]
    assert records[1][1] == ["a", "f", "2024-01-01", 'line one\nline two, with "quotes"']
    assert records[2][1][3] == "Zoë 你好"
    assert isinstance(records[3][1], str) and "not valid CSV" in records[3][1]
    assert records[4][1][3] == "a\n\nb\n\nc"
    assert offsets[-1] == len(TRICKY)
    # Each offset is where the next record starts: parsing from there gives the same remaining records.
    for index, offset in enumerate(offsets[:-1]):
        line = records[index + 1][0] - 1
        rest = list(CsvStream(io.BytesIO(TRICKY[offset:]), offset=offset, line=line, block_size=block_size)
                    .records())
        assert rest == records[index + 1:]


def test_resuming_from_any_record_boundary_of_a_generated_file():
    data = csv_bytes(300, seed=9)
    records, offsets = parse_all(data, 512)
    assert len(records) == 301
    middle = 150
    rest = list(CsvStream(io.BytesIO(data[offsets[middle]:]), offsets[middle], records[middle + 1][0] - 1, 512)
                .records())
    assert rest == records[middle + 1:]


def test_invalid_utf8_rejects_only_that_record():
    data = b"response_id,form_id,submitted_at,q\nx,f,d,\xff\xfe\ny,f,d,ok\n"
    header, offset = read_header(data)
    assert header.columns == ("response_id", "form_id", "submitted_at", "q")
    records = list(CsvStream(io.BytesIO(data[offset:]), offset, 1, block_size=8).records())
    assert records == [(2, "not valid UTF-8 text"), (3, ["y", "f", "d", "ok"])]


def test_header_with_invalid_utf8_is_a_bad_header():
    with pytest.raises(BadHeader, match="UTF-8"):
        read_header(b"response_id,form\xff_id,submitted_at\n")


def test_a_nul_character_rejects_only_its_record_and_in_the_header_anywhere_refuses_the_file():
    data = b"response_id,form_id,submitted_at,q\nx,f\x00,d,a\ny,f,d,ok\nz,f,d,b\x00c\n"
    header, offset = read_header(data)
    records = list(CsvStream(io.BytesIO(data[offset:]), offset, 1, block_size=16).records())
    assert records == [(2, "column 2 holds a NUL character, which PostgreSQL text cannot store"),
                       (3, ["y", "f", "d", "ok"]),
                       (4, "column 4 holds a NUL character, which PostgreSQL text cannot store")]
    # A NUL in the header past the first 4 KiB is refused like one at its start.
    long_header = b"response_id,form_id,submitted_at," + b"q" * 5000 + b",a\x00b\n"
    with pytest.raises(BadHeader, match="NUL"):
        read_header(long_header)


@pytest.mark.parametrize("block_size", [3, 64, 1 << 20])
def test_records_over_the_byte_limits_are_rejected_and_skipped_without_losing_their_neighbours(block_size):
    # Given a file with an over-long unquoted row, an over-long quoted multi-line row (with escaped quotes),
    # a row with a field over the field limit, and good rows between and after them
    long_plain = b"a," + b"x" * 500 + b"\n"
    long_quoted = b'b,"' + b'y\n""q""\n' * 60 + b'",z\n'
    big_field = b"c," + "é".encode() * 70 + b"\n"  # 140 bytes in 70 characters
    rows = [b"1,ok\n", long_plain, b"2,ok\n", long_quoted, b'3,"x\ny"\n', big_field, b"4,ok"]
    data = b"".join(rows)
    stream = CsvStream(io.BytesIO(data), 0, 0, block_size=block_size, max_record_bytes=300, max_field_bytes=100)
    records, offsets = [], []
    for record in stream.records():
        records.append(record)
        offsets.append(stream.offset)
    # Then each bad row is reported at its line, and every other row is read as it is
    assert records == [
        (1, ["1", "ok"]),
        (2, "the row is longer than 300 bytes (UPLOAD_BATCH_BYTES)"),
        (3, ["2", "ok"]),
        (4, "the row is longer than 300 bytes (UPLOAD_BATCH_BYTES)"),
        (125, ["3", "x\ny"]),
        (127, "column 2 is longer than 100 bytes (MAX_FIELD_BYTES)"),
        (128, ["4", "ok"]),
    ]
    assert offsets[-1] == len(data)
    # And resuming after any record gives the same rest
    for index, offset in enumerate(offsets[:-1]):
        rest = CsvStream(io.BytesIO(data[offset:]), offset, records[index + 1][0] - 1, block_size=block_size,
                         max_record_bytes=300, max_field_bytes=100)
        assert list(rest.records()) == records[index + 1:]


def test_batches_close_at_the_row_or_the_byte_limit_whichever_comes_first():
    from services.upload.copy_lines import BatchLimits, parse_batches

    data = csv_bytes(500, seed=5)
    header, offset = read_header(data)

    def batches(limits: BatchLimits) -> list:
        stream = CsvStream(io.BytesIO(data[offset:]), offset, 1, max_record_bytes=limits.bytes,
                           max_field_bytes=limits.field_bytes)
        return list(parse_batches(stream, header, limits, "org", "task"))

    by_rows = batches(BatchLimits(rows=100, bytes=1 << 30, field_bytes=1 << 20))
    assert [len(lines(b)) for b in by_rows] == [100] * 5 + [0]
    by_bytes = batches(BatchLimits(rows=100, bytes=8 * 1024, field_bytes=1 << 20))
    assert len(by_bytes) > 6
    # Each batch holds rows up to the one that reaches the byte limit, and no row is lost or repeated.
    assert all(b.size - len(lines(b)[-1]) < 8 * 1024 for b in by_bytes if lines(b))
    assert all(b.size == sum(map(len, lines(b))) for b in by_bytes)
    assert [i for b in by_bytes for i in b.ids] == [i for b in by_rows for i in b.ids]
    assert by_bytes[-1].end_offset == len(data)


def test_forgetting_which_questions_forms_had_answered_changes_no_form_s_questions(monkeypatch):
    # Given a file of many forms, each answering its questions over several rows
    from services.upload import copy_lines
    from services.upload.copy_lines import BatchLimits, parse_batches

    lines = ["response_id,form_id,submitted_at,q1,q2,q3"]
    for n in range(600):
        answers = ["", "", ""]
        answers[n % 3] = "a"
        lines.append(f"00000000-0000-4000-8000-{n:012d},form{n % 40},2024-01-01,{','.join(answers)}")
    data = ("\n".join(lines) + "\n").encode()
    header, offset = read_header(data)

    def questions_per_form() -> dict[str, list[str]]:
        """What the batches ask PostgreSQL to remember: the order in which each form's questions appear."""
        stream = CsvStream(io.BytesIO(data[offset:]), offset, 1)
        known: dict[str, list[str]] = {}
        for batch in parse_batches(stream, header, BatchLimits(50, 1 << 30, 1 << 20), "org", "task"):
            for form, questions in batch.questions_seen.items():
                known.setdefault(form, []).extend(q for q in questions if q not in known.get(form, []))
        return known

    remembered = questions_per_form()
    # When the memory of what each form has answered is capped so low that it is forgotten all the time
    monkeypatch.setattr(copy_lines, "_FORM_TRACKING_BYTES", 1000)
    # Then every form still gets the same questions in the same order
    assert questions_per_form() == remembered
    assert remembered["form0"] == ["q1", "q2", "q3"] and remembered["form1"] == ["q2", "q3", "q1"]


def test_the_batch_limits_come_from_the_settings():
    from services.upload.copy_lines import BatchLimits
    from shared.config import Settings

    defaults = BatchLimits.from_settings(Settings.from_env({}))
    assert (defaults.rows, defaults.bytes, defaults.field_bytes) == (20000, 16 * 1024 * 1024, 1024 * 1024)
    configured = BatchLimits.from_settings(Settings.from_env({"UPLOAD_BATCH_ROWS": "7", "UPLOAD_BATCH_BYTES": "4096",
                                                              "MAX_FIELD_BYTES": "100"}))
    assert (configured.rows, configured.bytes, configured.field_bytes) == (7, 4096, 100)


def test_each_batch_is_stored_in_submission_order_whatever_the_file_s_order():
    import csv

    from services.upload.copy_lines import BatchLimits, parse_batches

    # Given a file whose rows are not in submission order
    data = csv_bytes(300, seed=8)
    in_file = [row[2] for row in csv.reader(io.StringIO(data.decode(), newline=""))][1:]
    assert in_file[:100] != sorted(in_file[:100])
    header, offset = read_header(data)
    limits = BatchLimits(rows=100, bytes=1 << 30, field_bytes=1 << 20)
    batches = [b for b in parse_batches(CsvStream(io.BytesIO(data[offset:]), offset, 1), header, limits,
                                        "org", "task") if lines(b)]
    # Then each batch's COPY lines come ordered by submitted_at, and are the rows of that part of the file
    assert len(batches) == 3
    for batch in batches:
        moments = [datetime.fromisoformat(line.split(b"\t")[3].decode()) for line in lines(batch)]
        assert moments == sorted(moments)
        assert sorted(line.split(b"\t")[1].decode() for line in lines(batch)) == sorted(batch.ids)
