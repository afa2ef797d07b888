"""Uploads are whole or not at all, through a real gunicorn gateway driven by raw sockets: a client that
disconnects mid-body, a Content-Length that ends mid-field, a body without its closing boundary and a
chunked body cut off leave nothing behind; a chunked body that arrives whole is imported."""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import tempfile
import uuid
from pathlib import Path

import pytest

from scripts.sample_data import csv_bytes
from tests.conftest import auth, multipart, new_key, stored_for, wait_for, wait_for_state
from tests.gateway.conftest import running_gateway


class Gateway:
    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path

    def access_line(self, request_id: str) -> dict | None:
        """The access log line of the request with this id, once gunicorn has finished it."""
        for line in self.log_path.read_text().splitlines():
            if request_id in line:
                entry = json.loads(line)
                if entry.get("logger") == "gunicorn.access":
                    return entry
        return None


@pytest.fixture(scope="module")
def gateway():
    """gunicorn serving the gateway (as `collect up` does, header-deadline worker included) on a free port,
    logging to a file."""
    log = Path(tempfile.mkdtemp(prefix="collect-upload-faults-")) / "gateway.log"
    with running_gateway(log) as url:
        yield Gateway(int(url.rsplit(":", 1)[1]), log)


@pytest.fixture
def org(rt):
    """A fresh organization: (its API key, a function counting its tasks and stored files)."""
    name = f"faults-{uuid.uuid4().hex[:8]}"
    key = new_key(rt, name)

    def leftovers() -> dict[str, int]:
        # Chunks cannot outlive their stored_files row (foreign key): counting files counts them too.
        return stored_for(rt, name)

    return key, leftovers


def request_head(key: str, headers: dict[str, str], request_id: str) -> bytes:
    lines = ["POST /api/upload-file/ HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             f"X-Request-ID: {request_id}", *(f"{k}: {v}" for k, v in {**headers, **auth(key)}.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def exchange(port: int, head: bytes, body: bytes, *, hang_up: str | None = None) -> bytes | None:
    """Send a request as raw bytes and return the raw response. With `hang_up` ("close": FIN, "reset":
    RST), the client goes away right after the body instead, and None is returned."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head + body)
        if hang_up == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if hang_up:
            return None
        sock.shutdown(socket.SHUT_WR)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
        return response


def status_and_json(response: bytes) -> tuple[int, dict]:
    head, _, payload = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(payload)


def chunked(body: bytes, piece: int) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + piece]), body[i:i + piece])
                    for i in range(0, len(body), piece)) + b"0\r\n\r\n"


DATA = csv_bytes(300, seed=31)


def test_a_client_that_disconnects_mid_body_leaves_no_task_and_no_file(gateway, org):
    # Given an upload whose client hangs up after half of the announced body
    key, leftovers = org
    before = leftovers()
    body, headers = multipart(DATA)
    request_id = uuid.uuid4().hex
    head = request_head(key, {**headers, "Content-Length": str(len(body))}, request_id)
    # When it goes away
    exchange(gateway.port, head, body[: len(body) // 2], hang_up="close")
    # Then, once the gateway has finished the request, nothing of it is stored
    access = wait_for(lambda: gateway.access_line(request_id))
    assert access["status"] == "400"
    assert leftovers() == before == {**before, "tasks": 0, "files": 0}


@pytest.mark.parametrize("cut", ["mid_field", "before_closing_boundary", "inside_closing_boundary"])
def test_a_body_that_ends_early_is_400_and_stores_nothing(gateway, org, cut):
    # Given a body that Content-Length truncates: inside the last cell, just before the closing boundary,
    # or inside it
    key, leftovers = org
    before = leftovers()
    body, headers = multipart(DATA)
    end = {"mid_field": body.index(DATA[-5:]) + 2,
           "before_closing_boundary": body.rindex(b"\r\n--"),
           "inside_closing_boundary": len(body) - 6}[cut]
    body = body[:end]
    # When it is sent whole (as far as Content-Length says)
    response = exchange(gateway.port, request_head(key, {**headers, "Content-Length": str(len(body))},
                                                   uuid.uuid4().hex), body)
    # Then it is refused as incomplete, and nothing is stored
    status, problem = status_and_json(response)
    assert status == 400, problem
    assert problem["title"] == "Incomplete Upload"
    assert "closing boundary" in problem["detail"]
    assert leftovers() == before


def test_a_chunked_body_is_streamed_and_imported_with_its_sha256(gateway, org, client, worker, rt):
    # Given an upload sent with chunked transfer coding, in uneven pieces
    key, leftovers = org
    body, headers = multipart(DATA)
    head = request_head(key, {**headers, "Transfer-Encoding": "chunked"}, uuid.uuid4().hex)
    # When it is sent
    status, task = status_and_json(exchange(gateway.port, head, chunked(body, 7777)))
    # Then it is accepted and imported whole, and its result carries the file's SHA-256
    assert status == 202, task
    done = wait_for_state(client, key, task["task_id"], "completed")
    assert done["result"]["rows_inserted"] == 300
    assert done["result"]["sha256"] == hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize("hang_up", ["close", "reset"])
def test_a_chunked_body_cut_off_stores_nothing(gateway, org, hang_up):
    # Given a chunked upload whose client goes away in the middle of a chunk
    key, leftovers = org
    before = leftovers()
    body, headers = multipart(DATA)
    request_id = uuid.uuid4().hex
    encoded = chunked(body, 4096)
    # When it hangs up (FIN or RST)
    exchange(gateway.port, request_head(key, {**headers, "Transfer-Encoding": "chunked"}, request_id),
             encoded[: len(encoded) // 2], hang_up=hang_up)
    # Then the gateway ends the request without a 5xx, and nothing is stored
    access = wait_for(lambda: gateway.access_line(request_id))
    assert access["status"] == "400"
    assert leftovers() == before


def test_a_chunked_body_without_closing_boundary_is_400(gateway, org):
    key, leftovers = org
    before = leftovers()
    body, headers = multipart(DATA)
    body = body[: body.rindex(b"\r\n--")]
    head = request_head(key, {**headers, "Transfer-Encoding": "chunked"}, uuid.uuid4().hex)
    status, problem = status_and_json(exchange(gateway.port, head, chunked(body, 5000)))
    assert status == 400, problem
    assert "closing boundary" in problem["detail"]
    assert leftovers() == before
