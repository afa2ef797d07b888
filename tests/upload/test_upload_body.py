"""The upload request: Content-Digest, one file part, a body stream that fails while the file is stored."""

from __future__ import annotations

import base64
import hashlib
import io
import uuid

import pytest

from scripts.sample_data import csv_bytes
from tests.conftest import auth, multipart, new_key, stored_for, wait_for_state

DATA = csv_bytes(50, seed=41)


@pytest.fixture
def org(rt):
    """A fresh organization's key, and a function counting its tasks and stored files."""
    name = f"body-{uuid.uuid4().hex[:8]}"
    key = new_key(rt, name)

    def stored() -> tuple[int, int]:
        counts = stored_for(rt, name)
        return counts["tasks"], counts["files"]

    return key, stored


def post(client, key: str, body: bytes, headers: dict, **extra):
    return client.simulate_post("/api/upload-file/", body=body, headers={**headers, **auth(key), **extra})


def digest(body: bytes, algorithm: str = "sha256") -> str:
    return base64.b64encode(hashlib.new(algorithm, body).digest()).decode()


def test_a_matching_content_digest_over_the_whole_body_is_accepted(client, org, worker):
    key, _ = org
    body, headers = multipart(DATA)
    result = post(client, key, body, headers, **{"Content-Digest": f"sha-256=:{digest(body)}:, "
                                                 f"sha-512=:{digest(body, 'sha512')}:, md5=:AAAA:"})
    assert result.status_code == 202, result.text
    task = wait_for_state(client, key, result.json["task_id"], "completed")
    assert task["result"]["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert task["params"]["sha256"] == hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize("header, words", [
    ("sha-256=:{file}:", "does not match"),  # the digest of the file part alone, not of the request content
    ("sha-512=:{wrong512}:", "does not match"),
    ("sha-256=:{body}:, sha-512=:{wrong512}:", "does not match"),
    ("sha-256=abc", "byte sequence"),
    ("sha-256=\"{body}\"", "byte sequence"),
    ("sha-256=:AAAA:", "byte sequence"),
    ("sha-256=:not base64!:", "structured-field"),
    ("md5=:AAAA:", "supported algorithms"),
    ("", "supported algorithms"),
])
def test_a_wrong_or_malformed_content_digest_is_400_and_stores_nothing(client, org, header, words):
    key, stored = org
    body, headers = multipart(DATA)
    value = header.format(file=digest(DATA), body=digest(body), wrong512=digest(b"other", "sha512"))
    result = post(client, key, body, headers, **{"Content-Digest": value})
    assert result.status_code == 400, result.text
    assert result.headers["content-type"] == "application/problem+json"
    assert words in result.json["detail"]
    assert result.json["header"] == "Content-Digest"
    assert stored() == (0, 0)


def test_a_second_file_part_is_400_and_stores_nothing(client, org):
    key, stored = org
    first, headers = multipart(DATA)
    boundary = headers["Content-Type"].split("boundary=")[1]
    second = (f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="attachment"; filename="b.csv"\r\n\r\n'
              ).encode() + DATA
    body = first[: first.rindex(b"\r\n--")] + second + f"\r\n--{boundary}--\r\n".encode()
    for name_of_second in ("attachment", "file"):
        result = post(client, key, body.replace(b'name="attachment"', f'name="{name_of_second}"'.encode()), headers)
        assert result.status_code == 400, result.text
        assert "more than one file part" in result.json["detail"]
    assert stored() == (0, 0)


def test_other_form_fields_around_the_file_are_ignored(client, org):
    key, _ = org
    file_body, headers = multipart(DATA)
    boundary = headers["Content-Type"].split("boundary=")[1]
    field = f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'.encode()
    body = field + file_body[: file_body.rindex(b"\r\n--")] + b"\r\n" + field + f"--{boundary}--\r\n".encode()
    result = post(client, key, body, headers)
    assert result.status_code == 202, result.text


class FailingInput(io.RawIOBase):
    """A WSGI input that delivers `good` bytes, then fails as a server does when the client is gone."""

    def __init__(self, data: bytes, good: int) -> None:
        self._data = io.BytesIO(data)
        self._good = good

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._data.tell() >= self._good:
            raise ConnectionResetError("connection reset by peer")
        return self._data.read(min(size if size >= 0 else self._good, self._good - self._data.tell()))


def test_a_body_stream_that_fails_while_the_file_is_stored_rolls_everything_back(client, org):
    # Given a body whose stream fails after 3 MiB, once several chunks of the file are stored
    key, stored = org
    data = csv_bytes(40_000, seed=42)
    body, headers = multipart(data)
    # When it is posted
    result = client.simulate_post("/api/upload-file/", body=body, headers={**headers, **auth(key)},
                                  extras={"wsgi.input": FailingInput(body, 3 * 1024 * 1024)})
    # Then the answer is 400 naming the failure, and neither the file (nor so its chunks) nor a task remain
    assert result.status_code == 400, result.text
    assert "could not be read to its end" in result.json["detail"]
    assert stored() == (0, 0)
