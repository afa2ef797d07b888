"""The real stack for the browser tests, started as scripts/run starts it (`collect up --dev-key`), and
headless Chromium (Debian's /usr/bin/chromium) driven by Playwright for Python."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import ROOT, wait_for
from tests.gateway.conftest import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 # Any other host is unreachable, as offline: the page must not need one.
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
DEV_KEY_HEADER = "Development API key"


@dataclass
class Stack:
    url: str
    dev_key: str
    env: dict[str, str]


def start_stack(env_overrides: dict[str, str], output: Path) -> tuple[subprocess.Popen, Stack]:
    """`collect up --dev-key` on a free port with its own broker namespace; waits for the printed dev key."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "BROKER_NAMESPACE": f"dash-{uuid.uuid4().hex[:8]}",
           "GATEWAY_WORKERS": "1", **env_overrides}
    with output.open("wb") as out:
        process = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "collect"), "up", "--dev-key"],
                                   env=env, cwd=ROOT, stdout=out, stderr=subprocess.DEVNULL)

    def dev_key() -> str | None:
        assert process.poll() is None, f"collect up exited with {process.returncode}: {output.read_text()[-2000:]}"
        lines = output.read_text(errors="replace").splitlines()
        for index, line in enumerate(lines[:-1]):
            if line.startswith(DEV_KEY_HEADER):
                return lines[index + 1].strip()
        return None

    key = wait_for(dev_key, timeout=90, interval=0.2)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return urllib.request.urlopen(f"{url}/health/ready", timeout=2).status == 200
        except OSError:
            return False

    wait_for(ready, timeout=30, interval=0.2)
    return process, Stack(url, key, env)


def stop_stack(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="package")
def stack(rt):
    """The whole stack; small upload batches so that a test has time to pause a running upload."""
    output = Path(tempfile.mkdtemp(prefix="collect-dash-")) / "collect-up.out"
    process, found = start_stack({"UPLOAD_BATCH_ROWS": "100"}, output)
    try:
        yield found
    finally:
        stop_stack(process)


@pytest.fixture(scope="package")
def browser():
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield launched
    finally:
        launched.close()
        playwright.stop()


@dataclass
class Watched:
    """A page and what it did: console errors, uncaught exceptions, and requests to any other host."""

    page: object
    origin: str
    errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.foreign_requests == [], self.foreign_requests
        assert self.requests, "no request was recorded"


@pytest.fixture
def open_dashboard(browser, stack):
    """Opens the dashboard in a fresh browser context (its own sessionStorage) at a given width."""
    contexts = []

    def open_page(width: int = 1280) -> Watched:
        context = browser.new_context(viewport={"width": width, "height": 900}, accept_downloads=True)
        contexts.append(context)
        page = context.new_page()
        watched = Watched(page, urlsplit(stack.url).netloc)
        page.on("console", lambda m: watched.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: watched.errors.append(f"uncaught: {e}"))

        def on_request(request):
            watched.requests.append(request.url)
            parts = urlsplit(request.url)
            if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != watched.origin:
                watched.foreign_requests.append(request.url)

        page.on("request", on_request)
        page.goto(stack.url + "/")
        return watched

    yield open_page
    for context in contexts:
        context.close()


def sign_in(page, key: str) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#app-view").wait_for(state="visible", timeout=10_000)
