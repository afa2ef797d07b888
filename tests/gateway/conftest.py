"""A real gateway for the tests that need HTTP over a socket: gunicorn with the production log config."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT


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


@pytest.fixture(scope="session")
def live_gateway():
    """gunicorn serving services.gateway.wsgi:app on 127.0.0.1, against the test database and Redis db;
    its log (stderr) goes to a file the tests can read."""
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="collect-gateway-")) / "gateway.log"
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
        yield LiveGateway(url, log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
