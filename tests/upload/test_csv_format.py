"""CsvStream: records, line numbers and byte offsets, whatever the block size."""

from __future__ import annotations

import io

import pytest

from services.upload.csv_format import BadHeader, CsvStream, read_header
from services.upload.sample_data import csv_bytes

TRICKY = (
    "\ufeffresponse_id,form_id,submitted_at,note\r\n"
    'a,f,2024-01-01,"line one\nline two, with ""quotes"""\r\n'
    "b,f,2024-01-01,Zoë 你好\n"
    'c,f,2024-01-01,"unclosed "quote" here\n'
    'd,f,2024-01-01,"a\n\nb\n\nc"\n'
    "e,f,2024-01-01,last"
).encode("utf-8")


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
