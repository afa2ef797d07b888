"""/docs/ renders the API's operations in a real browser, with no internet access."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

from tests.conftest import ROOT

OPERATIONS = ["/api/upload-file/", "/api/pause/{task_id}/", "/api/resume/{task_id}/",
              "/api/revoke/{task_id}/", "/api/tasks/", "/api/tasks/{task_id}/", "/health/live",
              "/health/ready", "/health/{service}"]


def chromium() -> str:
    """The chromium binary; scripts/ensure_chromium installs it (scripts/test calls it)."""
    found = shutil.which("chromium")
    assert found, "chromium is not installed: run scripts/ensure_chromium (as root)"
    return found


def rendered_dom(url: str) -> str:
    with tempfile.TemporaryDirectory(prefix="collect-chromium-") as profile:
        result = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}",
             # Every host but the test server is unreachable: the page must not need the internet.
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--virtual-time-budget=15000", "--dump-dom", url],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_docs_page_lists_every_operation_offline(live_gateway):
    dom = rendered_dom(f"{live_gateway.url}/docs/")
    assert 'class="swagger-ui' in dom, dom[:2000]
    assert "Collect Tasks API" in dom
    for path in OPERATIONS:
        assert f'data-path="{path}"' in dom, f"{path} is not listed on the page"
    assert "Pause a task" in dom
