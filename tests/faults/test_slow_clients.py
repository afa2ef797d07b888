"""Slow or malicious clients cannot starve the gateway: connections that never finish their request
headers cost no thread and are closed after HEADER_TIMEOUT_SECONDS; an upload whose body stalls for
BODY_STALL_SECONDS is a 400 and stores nothing. Real sockets against the real gunicorn gateway."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import uuid

from tests.conftest import auth, multipart, new_key
from tests.faults.conftest import gateway, timed

SEED = 20261128
STALLED_CONNECTIONS = 200
HEADER_TIMEOUT = 3
BODY_STALL = 2
# Beginnings of requests that never end: a partial request line, partial headers, a header block
# missing its final empty line.
PARTIAL_REQUESTS = (
    b"G",
    b"GET /health/li",
    b"GET /health/live HTTP/1.1\r\n",
    b"GET /api/tasks/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthoriz",
    b"POST /api/upload-file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data\r\n",
    b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n",
)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes the connection within `timeout` seconds (without answering)."""
    sock.settimeout(max(0.01, timeout))
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def drip(sock: socket.socket, stop: threading.Event, closed_at: list[float]) -> None:
    """A slowloris client: one byte of a header every 0.2 s, never the end of the block."""
    for byte in b"GET /health/live HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
        if stop.wait(0.2):
            return
        try:
            sock.send(bytes([byte]))
        except OSError:
            closed_at.append(time.monotonic())
            return


def test_200_stalled_connections_delay_no_one_and_are_closed_after_the_header_timeout(rt):
    key = new_key(rt)
    rng = random.Random(SEED)
    with gateway(rt.settings.database_url, rt.settings.redis_url,
                 HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT)) as gw:
        address = ("127.0.0.1", port_of(gw.url))
        # Given 200 connections that each sent part of a request and stalled, and one that drips bytes
        opened_at = time.monotonic()
        stalled = []
        for _ in range(STALLED_CONNECTIONS):
            sock = socket.create_connection(address)
            sock.sendall(rng.choice(PARTIAL_REQUESTS))
            stalled.append(sock)
        dripping, stop, dripping_closed_at = socket.create_connection(address), threading.Event(), []
        dripper = threading.Thread(target=drip, args=(dripping, stop, dripping_closed_at), daemon=True)
        dripper.start()
        try:
            time.sleep(0.5)  # every connection accepted and stalled by now
            # Then liveness and the API still answer within 1 s, again and again
            slowest = 0.0
            for _ in range(5):
                seconds, (status, _, _) = timed(lambda: gw.request("GET", "/health/live", timeout=5))
                assert status == 200 and seconds < 1, f"/health/live: {status} after {seconds:.2f}s"
                slowest = max(slowest, seconds)
                seconds, (status, _, _) = timed(lambda: gw.request("GET", "/api/tasks/", headers=auth(key),
                                                                   timeout=5))
                assert status == 200 and seconds < 1, f"/api/tasks/: {status} after {seconds:.2f}s"
                slowest = max(slowest, seconds)
            print(f"slowest answer with {STALLED_CONNECTIONS} stalled connections: {slowest * 1000:.0f} ms")
            # And every stalled connection is closed once HEADER_TIMEOUT_SECONDS have passed, not before
            assert not closed_by_server(stalled[0], HEADER_TIMEOUT - 1.5 - (time.monotonic() - opened_at))
            deadline = opened_at + HEADER_TIMEOUT + 3
            still_open = [sock for sock in stalled if not closed_by_server(sock, deadline - time.monotonic())]
            assert still_open == []
            closed_after = time.monotonic() - opened_at
            assert HEADER_TIMEOUT - 0.5 <= closed_after < HEADER_TIMEOUT + 3
            print(f"all stalled connections closed {closed_after:.1f}s after they opened")
            # And so is the one that kept sending a byte now and then: the deadline is for the whole block
            dripper.join(HEADER_TIMEOUT + 3)
            assert dripping_closed_at and dripping_closed_at[0] - opened_at < HEADER_TIMEOUT + 3
            # And the gateway still serves
            assert gw.request("GET", "/health/live")[0] == 200
        finally:
            stop.set()
            for sock in [*stalled, dripping]:
                sock.close()


def test_an_upload_whose_body_stalls_is_a_400_and_stores_nothing(rt):
    organization = f"stall-{uuid.uuid4().hex[:8]}"
    key = new_key(rt, organization)
    rows = "".join(f"{uuid.UUID(int=i)},form-1,2024-01-01T00:00:00Z,{'x' * 200}\n" for i in range(15000))
    body, headers = multipart(f"response_id,form_id,submitted_at,answer\n{rows}".encode())
    assert len(body) > 3 * 1024 * 1024  # more than the first chunk: the stall comes while storing
    with gateway(rt.settings.database_url, rt.settings.redis_url, BODY_STALL_SECONDS=str(BODY_STALL)) as gw:
        sock = socket.create_connection(("127.0.0.1", port_of(gw.url)))
        try:
            # Given an upload whose body stops after 2 MiB, its connection left open
            head = (f"POST /api/upload-file/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
                    f"Content-Type: {headers['Content-Type']}\r\nAuthorization: Bearer {key}\r\n\r\n")
            sock.sendall(head.encode() + body[: 2 * 1024 * 1024])
            stalled_at = time.monotonic()
            # Then after BODY_STALL_SECONDS the gateway answers 400 with a problem naming the stall
            sock.settimeout(BODY_STALL + 10)
            response = b""
            while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                response += chunk
            waited = time.monotonic() - stalled_at
        finally:
            sock.close()
        status_line, _, rest = response.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 400"), response[:300]
        assert BODY_STALL - 0.5 <= waited < BODY_STALL + 5
        problem = json.loads(rest.partition(b"\r\n\r\n")[2])
        assert problem["title"] == "Request Body Stalled"
        assert "BODY_STALL_SECONDS" in problem["detail"]
        # And nothing was stored: no task, no file
        with rt.db.transaction() as cur:
            cur.execute("SELECT (SELECT count(*) FROM tasks t WHERE t.organization_id = o.id) AS tasks, "
                        "(SELECT count(*) FROM stored_files f WHERE f.organization_id = o.id) AS files "
                        "FROM organizations o WHERE o.name = %s", (organization,))
            assert dict(cur.fetchone()) == {"tasks": 0, "files": 0}
        # And the gateway still serves
        assert gw.request("GET", "/health/live")[0] == 200
