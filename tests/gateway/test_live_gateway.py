"""The gateway under gunicorn: JSON log lines that name each request, and a 500 traceable by its id."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from tests.conftest import wait_for


def get(url: str, headers: dict | None = None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_every_log_line_is_json_and_access_lines_name_the_request(live_gateway):
    # Given a request with a request id
    status, headers, _ = get(f"{live_gateway.url}/api/tasks/", {"X-Request-ID": "trace-me-123"})
    # Then it is refused (no key) with the same id echoed
    assert status == 401
    assert headers["X-Request-ID"] == "trace-me-123"
    # And the access line in the log is one JSON object with that id
    access = wait_for(lambda: [json.loads(line) for line in live_gateway.log_lines()
                               if "trace-me-123" in line])
    assert access[0]["logger"] == "gunicorn.access"
    assert access[0]["request_id"] == "trace-me-123"
    assert access[0]["status"] == "401"
    assert access[0]["path"] == "/api/tasks/"
    for line in live_gateway.log_lines():
        json.loads(line)


def test_a_request_gunicorn_cannot_parse_is_answered_with_a_problem(live_gateway):
    # Given a request with a malformed Content-Length, refused by gunicorn before the app sees it
    address = urlsplit(live_gateway.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(b"GET /api/tasks/ HTTP/1.1\r\nHost: x\r\nContent-Length: /z\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    # Then the answer is a 400 problem+json naming the header, like every other error of the API
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"Content-Type: application/problem+json" in head
    problem = json.loads(body)
    assert problem["status"] == 400 and "CONTENT-LENGTH" in problem["detail"].upper()


def test_a_request_line_over_gunicorns_limit_is_a_414_problem(live_gateway):
    # Given a request whose query string makes its request line longer than gunicorn's 4094 bytes
    status, headers, body = get(f"{live_gateway.url}/api/tasks/?state={'x' * 5000}")
    # Then it is a 414 problem+json, before the app (and its API-key check) sees it
    assert status == 414
    assert headers["Content-Type"] == "application/problem+json"
    problem = json.loads(body)
    assert problem["status"] == 414 and "4094" in problem["detail"]
