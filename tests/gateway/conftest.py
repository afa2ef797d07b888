"""A real gateway for the tests that need HTTP over a socket: gunicorn with the production log config."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, stop


@dataclass
class LiveGateway:
    url: str
    log_path: Path

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def running_gateway(log: Path) -> Iterator[str]:
    """gunicorn serving services.gateway.wsgi:app with its production configuration on a free port of
    127.0.0.1, against the test database and Redis db, logging to `log`; yields its URL once it answers."""
    port = free_port()
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "python:services.gateway.gunicorn_config",
             "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4",
             "services.gateway.wsgi:app"],
            cwd=ROOT, env=dict(os.environ), stdout=log_file, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health/live", process)
        yield url
    finally:
        stop(process, grace=10)


@pytest.fixture(scope="session")
def live_gateway():
    """The gateway under gunicorn; its log (stderr) goes to a file the tests can read."""
    log = Path(tempfile.mkdtemp(prefix="collect-gateway-")) / "gateway.log"
    with running_gateway(log) as url:
        yield LiveGateway(url, log)
