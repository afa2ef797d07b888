"""Regenerates docs/dashboard.png: starts the stack as scripts/run does (`collect up`, on a fresh database of
its own on the server DATABASE_URL names), creates a completed upload and export, a paused upload and a
running one, and photographs the dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright) at 1280 px. --narrow also writes the 390 px view next to it, to look at (not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, call, collect_up, fresh_database, post_file, server_urls, wait_state

from services.upload.sample_data import write_responses

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def csv_file(folder: Path, name: str, rows: int, seed: int) -> Path:
    path = folder / name
    with path.open("w", newline="", encoding="utf-8") as out:
        write_responses(out, rows, seed=seed)
    return path


def make_tasks(base: str, key: str, folder: Path) -> str:
    """A completed upload and export, a paused upload, and a running one (returned: revoke it when done)."""
    done = post_file(base, key, csv_file(folder, "clinic-visits-march.csv", 5_000, 1))
    wait_state(base, key, done, ("completed",))
    _, export = call("POST", f"{base}/api/export/?from_date=2024-01-01&to_date=2024-06-30", key)
    wait_state(base, key, export["task_id"], ("completed",))
    paused = post_file(base, key, csv_file(folder, "household-survey-2024.csv", 120_000, 2))
    wait_state(base, key, paused, ("running",), interval=0.02)
    time.sleep(1.5)
    call("POST", f"{base}/api/pause/{paused}/?wait=10", key)
    running = post_file(base, key, csv_file(folder, "crop-yield-north.csv", 400_000, 3))
    wait_state(base, key, running, ("running",), interval=0.02)
    time.sleep(3)
    return running


def photograph(base: str, key: str, out: Path, narrow: bool) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        widths = [(1280, out)] + ([(390, out.with_name(out.stem + "-390.png"))] if narrow else [])
        for width, path in widths:
            page = browser.new_page(viewport={"width": width, "height": 860}, device_scale_factor=1)
            page.goto(base + "/")
            page.get_by_label("API key").fill(key)
            page.get_by_role("button", name="Sign in").click()
            page.locator("#task-rows tr").nth(3).wait_for()
            page.locator(".badge-running").first.wait_for()
            page.wait_for_timeout(1500)  # one more poll: rate and ETA are known
            page.screenshot(path=str(path), full_page=True)
            print(f"wrote {path.relative_to(ROOT)}")
            page.close()
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("SCREENSHOT_PORT", "8097")))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--narrow", action="store_true", help="also write the 390 px wide view")
    args = parser.parse_args()
    server, redis_url = server_urls()
    database_url = fresh_database(server, "collect_screenshot")
    # Small batches keep the running upload running while the picture is taken.
    with tempfile.TemporaryDirectory() as tmp, collect_up(database_url, redis_url, args.port,
                                                           {"UPLOAD_BATCH_ROWS": "500"}) as (base, key):
        running = make_tasks(base, key, Path(tmp))
        try:
            photograph(base, key, args.out.resolve(), args.narrow)
        finally:
            print(json.dumps(call("POST", f"{base}/api/revoke/{running}/?wait=10", key)[1]["state"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
