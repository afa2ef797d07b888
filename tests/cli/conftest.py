"""The client commands against a live gateway (gunicorn, as tests/gateway starts it) and the in-process
worker, run as a user runs them: the installed `collect` executable in a subprocess or a pseudo-terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.upload.sample_data import csv_bytes
from tests.conftest import new_key, wait_for
from tests.gateway.conftest import live_gateway  # noqa: F401  (the same gunicorn fixture, for these tests)

COLLECT = os.path.join(os.path.dirname(sys.executable), "collect")
# What plain output must never contain: every control character but the newline ending each line.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def assert_plain(text: str) -> None:
    found = CONTROL_CHARACTERS.search(text)
    assert found is None, f"control character {found.group()!r} in {text!r}"


@dataclass
class Cli:
    """One organization's user of the client, with a home directory of their own (the login file goes there)."""

    url: str
    key: str
    home: Path
    cwd: Path
    rt: Any

    def env(self, **overrides: str | None) -> dict[str, str]:
        """The environment of a `collect` run: COLLECT_URL and COLLECT_API_KEY set, unless overridden (None
        removes a variable); HOME and XDG_CONFIG_HOME in the test's own directory."""
        env = {name: value for name, value in os.environ.items() if not name.startswith("COLLECT_")}
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"), COLLECT_URL=self.url,
                   COLLECT_API_KEY=self.key)
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def run(self, *args: str, input: str | None = None, **env: str | None) -> subprocess.CompletedProcess:
        """`collect ARGS` with stdout and stderr captured (so neither is a terminal)."""
        return subprocess.run([COLLECT, *args], env=self.env(**env), cwd=self.cwd, input=input, text=True,
                              capture_output=True, timeout=120)

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([COLLECT, *args], env=self.env(), cwd=self.cwd, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, headers={"Authorization": f"Bearer {self.key}"},
                             timeout=30, **kwargs)

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.api("GET", f"/api/tasks/{task_id}/")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_until(self, task_id: str, predicate, timeout: float = 60) -> dict[str, Any]:
        return wait_for(lambda: (lambda task: task if predicate(task) else None)(self.task(task_id)),
                        timeout=timeout, interval=0.05)

    def csv_file(self, rows: int, seed: int = 1, name: str = "responses.csv") -> Path:
        path = self.cwd / name
        path.write_bytes(csv_bytes(rows, seed=seed))
        return path


@pytest.fixture
def cli(live_gateway, worker, rt, tmp_path) -> Cli:  # noqa: F811  (live_gateway is the imported fixture)
    home = tmp_path / "home"
    home.mkdir()
    return Cli(live_gateway.url, new_key(rt), home, tmp_path, rt)
